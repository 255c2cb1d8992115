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

from typing import Any

import mlflow.pyfunc
from mlflow.models import set_model

# What `predict` takes and returns, and the defaults of its params: the model's signature (MLflow
# reads it from predict's type hints and from this example, logged as the input example).
PROMPT_EXAMPLE = ["The module"]
PARAM_DEFAULTS = {"max_new_tokens": 48, "temperature": 0.8, "top_k": 50, "seed": 0}


class HgptTextGenerator(mlflow.pyfunc.PythonModel):
    """Text continuation of each prompt with a Homebrew GPT-2 checkpoint: a list of prompts in,
    a list of continuations (without the prompt) out."""

    def load_context(self, context):
        from model.checkpoint import load_model

        self.model = load_model(context.artifacts["checkpoint"], device="cpu")

    # The type hints are the model's input/output schema: MLflow converts a DataFrame, a string
    # or a list given to predict into list[str] and checks it before this runs.
    def predict(self, context, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        from evaluation.generate import sample_text

        params = {**PARAM_DEFAULTS, **{k: v for k, v in (params or {}).items() if v is not None}}
        return sample_text(
            self.model, [str(p) for p in model_input],
            max_new_tokens=int(params["max_new_tokens"]),
            temperature=float(params["temperature"]),
            top_k=int(params["top_k"]) or None,
            seed=int(params["seed"]),
        )


set_model(HgptTextGenerator())
