"""Convert between our checkpoints and Hugging Face transformers' GPT-2 layout.

    hgpt export-hf CHECKPOINT OUT_DIR   # -> OUT_DIR/config.json + model.safetensors
    hgpt import-hf HF_DIR CHECKPOINT    # a transformers GPT-2 directory -> our checkpoint

Our modules already carry OpenAI's names; the only real difference is that OpenAI (and so
transformers) store the four big projections as `Conv1D`, whose weight is (in, out): the
transpose of `nn.Linear`'s (out, in). transformers does not import here: the layout is plain
safetensors + JSON, so no pickle is ever read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from model.checkpoint import (
    CheckpointError,
    load_model,
    load_state_into,
    load_weights,
    model_state_dict,
    write_checkpoint,
)
from model.config import GPTConfig
from model.gpt import GPT

# Submodules that are Conv1D in transformers' GPT-2, i.e. stored transposed.
_CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
# transformers' GPT-2 keeps its causal mask as non-persistent buffers in older checkpoints.
_HF_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")
EOT_TOKEN = 50256


def hf_config(config: GPTConfig) -> dict:
    """transformers' GPT2Config fields for our architecture (vocabulary without padding)."""
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",  # tanh-approximate GELU
        "layer_norm_epsilon": config.layer_norm_eps,
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "tie_word_embeddings": True,
        "bos_token_id": EOT_TOKEN,
        "eos_token_id": EOT_TOKEN,
        "torch_dtype": "float32",
    }


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under transformers' GPT2LMHeadModel keys (Conv1D weights transposed)."""
    vocab = model.config.vocab_size
    out = {}
    for key, tensor in model_state_dict(model).items():
        if key.endswith(_CONV1D_SUFFIXES):
            tensor = tensor.t()
        if key == "transformer.wte.weight":
            tensor = tensor[:vocab]  # drop padding rows: transformers' vocab is the real one
        out[key] = tensor.contiguous()
    return out


def export_hf(model: GPT, out_dir: str | os.PathLike) -> Path:
    if not model.config.bias:
        raise ValueError("transformers' GPT-2 has biases everywhere; cannot export bias=False")
    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "config.json").write_text(json.dumps(hf_config(model.config), indent=2))
    save_file(to_hf_state_dict(model), str(tmp / "model.safetensors"), metadata={"format": "pt"})
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def config_from_hf(hf: dict, source: Path) -> GPTConfig:
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{source}: model_type {hf.get('model_type')!r} is not gpt2")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(
            f"{source}: activation {hf['activation_function']!r} is not GPT-2's tanh GELU"
        )
    if hf.get("n_inner") not in (None, 4 * hf["n_embd"]):
        raise CheckpointError(f"{source}: n_inner {hf['n_inner']} is not 4 * n_embd")
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        raise CheckpointError(f"{source}: attention variants other than GPT-2's are not supported")
    return GPTConfig(
        block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
        vocab_size=hf["vocab_size"],
        n_layer=hf["n_layer"],
        n_head=hf["n_head"],
        n_embd=hf["n_embd"],
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
    )


def from_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' keys (with or without the `transformer.` prefix) -> ours."""
    out = {}
    for key, tensor in state.items():
        if key.endswith(_HF_BUFFER_SUFFIXES) or key == "lm_head.weight":
            continue  # causal-mask buffers; the head is tied to wte
        if not key.startswith("transformer."):
            key = "transformer." + key  # checkpoints saved from GPT2Model (e.g. OpenAI's)
        if key.endswith(_CONV1D_SUFFIXES):
            tensor = tensor.t()
        out[key] = tensor.float().contiguous()
    return out


def import_hf(hf_dir: str | os.PathLike) -> GPT:
    hf_dir = Path(hf_dir)
    config_path = hf_dir / "config.json"
    try:
        hf = json.loads(config_path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{config_path}: missing; not a transformers model directory") from None
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_path}: invalid JSON ({exc})") from None
    weights = hf_dir / "model.safetensors"
    if not weights.exists():
        hint = " (pytorch_model.bin is a pickle and is never loaded)" if (
            hf_dir / "pytorch_model.bin"
        ).exists() else ""
        raise CheckpointError(f"{weights}: missing{hint}")
    config = config_from_hf(hf, config_path)
    model = GPT(config)
    state = from_hf_state_dict(load_weights(weights))
    # A weights file written by transformers may also hold an untied lm_head; we require tying.
    load_state_into(model, state, weights)
    return model


def export_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    return export_hf(load_model(checkpoint), out_dir)


def import_checkpoint(hf_dir: str | os.PathLike, checkpoint: str | os.PathLike) -> Path:
    model = import_hf(hf_dir)
    return write_checkpoint(checkpoint, model, metadata={"imported_from": str(hf_dir)})
