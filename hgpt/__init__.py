"""The `hgpt` command: one entry point over the model, training, data and evaluation packages."""
