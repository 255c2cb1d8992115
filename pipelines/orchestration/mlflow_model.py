"""The MLflow model of a trained checkpoint: a pyfunc "from code", loaded without any pickle.

MLflow's usual ways to log a PyTorch model pickle either the module (`mlflow.pytorch`) or the
PythonModel instance (`cloudpickle`); loading those runs code from a file. Here the model's
artifacts are our safetensors checkpoint (config.json + model.safetensors + checkpoint.json) and
this file is the model's code: MLflow copies it into the model and executes it to get the
PythonModel, which rebuilds the GPT from JSON and safetensors.

    model = mlflow.pyfunc.load_model("models:/homebrew-gpt2@champion")
    model.predict(["The module"], params={"max_new_tokens": 32})
"""

from __future__ import annotations

import mlflow.pyfunc
from mlflow.models import set_model


class HgptTextGenerator(mlflow.pyfunc.PythonModel):
    """Text continuation of each prompt with a Homebrew GPT-2 checkpoint."""

    def load_context(self, context):
        from model.checkpoint import load_model

        self.model = load_model(context.artifacts["checkpoint"], device="cpu")

    def predict(self, context, model_input, params=None):
        from evaluation.generate import sample_text

        params = params or {}
        if hasattr(model_input, "columns"):  # a DataFrame: first column holds the prompts
            prompts = [str(v) for v in model_input.iloc[:, 0].tolist()]
        elif isinstance(model_input, str):
            prompts = [model_input]
        else:
            prompts = [str(v) for v in model_input]
        return sample_text(
            self.model, prompts,
            max_new_tokens=int(params.get("max_new_tokens", 48)),
            temperature=float(params.get("temperature", 0.8)),
            top_k=int(params["top_k"]) if params.get("top_k") else 50,
            seed=int(params["seed"]) if params.get("seed") is not None else 0,
        )


set_model(HgptTextGenerator())
