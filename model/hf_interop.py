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
    check_weights_header,
    expected_shapes,
    load_model,
    load_state_into,
    load_weights,
    model_state_dict,
    read_json_file,
    read_safetensors_header,
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
    """Our GPTConfig for a transformers GPT2Config's fields; CheckpointError naming `source`
    for a field that is missing, of the wrong type, or over SIZE_LIMITS."""
    if not isinstance(hf, dict):
        raise CheckpointError(f"{source}: not a JSON object")
    if hf.get("model_type", "gpt2") != "gpt2":
        raise CheckpointError(f"{source}: model_type {hf.get('model_type')!r} is not gpt2")
    if hf.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise CheckpointError(
            f"{source}: activation {hf['activation_function']!r} is not GPT-2's tanh GELU"
        )
    if hf.get("scale_attn_by_inverse_layer_idx") or hf.get("reorder_and_upcast_attn"):
        raise CheckpointError(f"{source}: attention variants other than GPT-2's are not supported")
    missing = [k for k in ("vocab_size", "n_layer", "n_head", "n_embd") if k not in hf]
    if missing:
        raise CheckpointError(f"{source}: missing field(s) {', '.join(missing)}")
    try:
        config = GPTConfig(
            block_size=hf.get("n_positions", hf.get("n_ctx", 1024)),
            vocab_size=hf["vocab_size"],
            n_layer=hf["n_layer"],
            n_head=hf["n_head"],
            n_embd=hf["n_embd"],
            layer_norm_eps=hf.get("layer_norm_epsilon", 1e-5),
        )
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: invalid GPT-2 config ({exc})") from None
    if hf.get("n_inner") not in (None, 4 * config.n_embd):
        raise CheckpointError(f"{source}: n_inner {hf['n_inner']} is not 4 * n_embd")
    return config


def _our_key(hf_key: str) -> str | None:
    """Our name for a tensor of a transformers GPT-2 file, or None for those we do not load."""
    if hf_key.endswith(_HF_BUFFER_SUFFIXES) or hf_key == "lm_head.weight":
        return None  # causal-mask buffers; the head is tied to wte
    if not hf_key.startswith("transformer."):
        return "transformer." + hf_key  # checkpoints saved from GPT2Model (e.g. OpenAI's)
    return hf_key


def from_hf_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers' keys (with or without the `transformer.` prefix) -> ours."""
    out = {}
    for hf_key, tensor in state.items():
        key = _our_key(hf_key)
        if key is None:
            continue
        if key.endswith(_CONV1D_SUFFIXES):
            tensor = tensor.t()
        out[key] = tensor.float().contiguous()
    return out


def check_hf_weights(config: GPTConfig, weights: Path, config_path: Path) -> None:
    """The weights file's header against the shapes `config` needs, in the file's own terms
    (Conv1D weights transposed), before anything is read or built."""
    found = {}
    for hf_key, entry in read_safetensors_header(weights).items():
        key = _our_key(hf_key)
        if key is None:
            continue
        if key in found:  # both "h.0..." and "transformer.h.0..."
            raise CheckpointError(f"{weights}: tensor {key} is stored twice")
        found[key] = entry
    expected = {
        key: shape[::-1] if key.endswith(_CONV1D_SUFFIXES) else shape
        for key, shape in expected_shapes(config).items()
    }
    check_weights_header(weights, found, expected, config_path)


def import_hf(hf_dir: str | os.PathLike) -> GPT:
    """Our GPT from a transformers GPT-2 directory. Its config is held to SIZE_LIMITS and
    checked against the weights file's header before any weight is read or the model built."""
    hf_dir = Path(hf_dir)
    config_path = hf_dir / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{config_path}: missing; not a transformers model directory")
    hf = read_json_file(config_path)
    weights = hf_dir / "model.safetensors"
    if not weights.exists():
        hint = " (pytorch_model.bin is a pickle and is never loaded)" if (
            hf_dir / "pytorch_model.bin"
        ).exists() else ""
        raise CheckpointError(f"{weights}: missing{hint}")
    config = config_from_hf(hf, config_path)
    check_hf_weights(config, weights, config_path)
    state = from_hf_state_dict(load_weights(weights))
    model = GPT(config)
    # A weights file written by transformers may also hold an untied lm_head; we require tying.
    load_state_into(model, state, weights)
    return model


def export_checkpoint(checkpoint: str | os.PathLike, out_dir: str | os.PathLike) -> Path:
    return export_hf(load_model(checkpoint), out_dir)


def import_checkpoint(hf_dir: str | os.PathLike, checkpoint: str | os.PathLike) -> Path:
    model = import_hf(hf_dir)
    return write_checkpoint(checkpoint, model, metadata={"imported_from": str(hf_dir)})
