"""Evaluation and sampling: held-out loss, HellaSwag, KV-cache generation, the champion model."""
