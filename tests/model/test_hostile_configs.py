"""Hostile checkpoint and transformers directories are refused before any large allocation.

Sizes are held to model.config.SIZE_LIMITS, the weights file's header length to
MAX_HEADER_BYTES, and every shape a config implies is compared with the weights file's header
before a weight is read or a model built. The CLI runs are confined to a 3 GiB address space,
so a regression dies of MemoryError instead of eating the machine.
"""

import json
import os
import resource
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from model import GPT, GPTConfig, PRESETS
from model.checkpoint import (
    MAX_CONFIG_BYTES,
    MAX_HEADER_BYTES,
    CheckpointError,
    load_model,
    load_weights,
    read_config,
    read_safetensors_header,
    sha256_file,
    write_checkpoint,
)
from model.config import SIZE_LIMITS
from model.hf_interop import config_from_hf, export_hf, hf_config, import_hf

CONFIG = GPTConfig(block_size=32, vocab_size=300, padded_vocab_size=320, n_layer=2, n_head=2, n_embd=16)
AS_LIMIT = 3 << 30
PEAK_RSS_LIMIT_KIB = 1 << 20  # 1 GiB: torch's import is about a third of it

# Each far over one limit; the others stay valid so the named limit is the one that trips.
HOSTILE = {
    "n_layer": {"n_layer": 10**9},
    "n_embd": {"n_embd": 10**7},
    "block_size": {"block_size": 10**9},
    "vocab_size": {"vocab_size": 10**9, "padded_vocab_size": None},
    "padded_vocab_size": {"padded_vocab_size": 10**9},
    "n_head": {"n_head": 2048},
    # Every field within its own limit, the product far over: ~825 billion parameters.
    "parameters": {"n_layer": 1024, "n_embd": 8192, "n_head": 64},
}


def _limit_text(field: str) -> str:
    if field == "parameters":
        return f"over the limit of {SIZE_LIMITS['parameters']}"
    return f"GPTConfig.{field} = {HOSTILE[field][field]} exceeds the limit of {SIZE_LIMITS[field]}"


def _reindex(ckpt):
    """What an attacker does after editing a checkpoint: hashes that match the new files."""
    index = json.loads((ckpt / "checkpoint.json").read_text())
    index["files"] = {name: sha256_file(ckpt / name) for name in index["files"]}
    (ckpt / "checkpoint.json").write_text(json.dumps(index))


@pytest.fixture
def checkpoint(tmp_path):
    return write_checkpoint(tmp_path / "ckpt", GPT(CONFIG, seed=3))


def _with_config(ckpt, **changes):
    (ckpt / "config.json").write_text(json.dumps({**CONFIG.to_dict(), **changes}))
    _reindex(ckpt)
    return ckpt


def _with_weights(ckpt, state):
    save_file(state, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    _reindex(ckpt)
    return ckpt


def _huge_header_length(path):
    path.write_bytes((2**62).to_bytes(8, "little") + b'{"a": ' + b" " * 64)


def _hf_dir(tmp_path, **changes):
    hf = export_hf(GPT(CONFIG.replace(padded_vocab_size=None), seed=3), tmp_path / "hf")
    if changes:
        (hf / "config.json").write_text(json.dumps({**hf_config(CONFIG), **changes}))
    return hf


# --- the limits --------------------------------------------------------------------------------


def test_limits_admit_every_gpt2_size_with_headroom():
    xl = PRESETS["gpt2-xl"]
    for field in ("n_layer", "n_head", "n_embd", "block_size", "vocab_size"):
        assert SIZE_LIMITS[field] >= 10 * getattr(xl, field), field
    assert SIZE_LIMITS["padded_vocab_size"] >= 10 * 50304
    assert SIZE_LIMITS["parameters"] >= 10 * xl.num_parameters
    for name, preset in PRESETS.items():  # each one as a checkpoint's and as transformers' config
        assert GPTConfig.from_dict(preset.to_dict()) == preset, name
        assert config_from_hf(hf_config(preset), "config.json") == preset.replace(
            padded_vocab_size=None), name


@pytest.mark.parametrize("config", [
    CONFIG, CONFIG.replace(bias=False), CONFIG.replace(padded_vocab_size=None),
    GPTConfig(block_size=7, vocab_size=11, n_layer=3, n_head=3, n_embd=9, bias=False),
    PRESETS["gpt2-xl"],
], ids=["padded", "no-bias", "unpadded", "odd", "gpt2-xl"])
def test_parameter_count_from_the_config_equals_the_built_model(config):
    with torch.device("meta"):  # gpt2-xl's shapes without its 6 GB
        model = GPT(config)
    assert config.num_parameters == model.num_parameters()


@pytest.mark.parametrize("field", HOSTILE)
def test_each_size_over_its_limit_is_refused_naming_the_limit(checkpoint, field):
    _with_config(checkpoint, **HOSTILE[field])
    with pytest.raises(CheckpointError, match="config.json") as err:
        read_config(checkpoint)
    assert _limit_text(field) in str(err.value)


def test_oversized_config_file_is_refused_unread(checkpoint):
    text = json.dumps(CONFIG.to_dict())
    (checkpoint / "config.json").write_text(text + " " * MAX_CONFIG_BYTES)
    with pytest.raises(CheckpointError, match=f"config.json: over the limit of {MAX_CONFIG_BYTES} bytes"):
        read_config(checkpoint)


# --- the weights file's header ----------------------------------------------------------------


def test_header_length_over_the_limit_is_refused_naming_it(tmp_path):
    path = tmp_path / "model.safetensors"
    _huge_header_length(path)
    for read in (read_safetensors_header, load_weights):
        with pytest.raises(CheckpointError, match="model.safetensors") as err:
            read(path)
        assert f"header length {2**62} exceeds the limit of {MAX_HEADER_BYTES} bytes" in str(err.value)


def _raw_safetensors(path, header: dict, data: bytes = b""):
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data)


def test_header_claiming_more_bytes_than_the_file_holds_is_refused(tmp_path):
    path = tmp_path / "model.safetensors"
    # A trillion floats declared, sixteen bytes present.
    _raw_safetensors(path, {"w": {"dtype": "F32", "shape": [10**6, 10**6],
                                  "data_offsets": [0, 4 * 10**12]}}, b"\0" * 16)
    with pytest.raises(CheckpointError, match="model.safetensors: corrupted or truncated"):
        read_safetensors_header(path)


def test_tensors_sharing_bytes_are_refused(tmp_path):
    # Two tensors over the same 16 bytes: aliasing would let a small file back a large model.
    path = tmp_path / "model.safetensors"
    entry = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
    _raw_safetensors(path, {"a": entry, "b": entry}, b"\0" * 16)
    with pytest.raises(CheckpointError, match="overlaps another's"):
        read_safetensors_header(path)


def test_header_of_a_real_file_matches_its_tensors(checkpoint):
    path = checkpoint / "model.safetensors"
    header = read_safetensors_header(path)
    assert header == {k: ("F32", tuple(v.shape)) for k, v in load_file(str(path)).items()}


def test_shapes_that_disagree_with_the_config_are_refused_naming_the_tensor(checkpoint):
    _with_config(checkpoint, n_embd=32)
    with pytest.raises(CheckpointError) as err:
        load_model(checkpoint)
    message = str(err.value)
    assert f"{checkpoint / 'model.safetensors'}: tensor transformer.wte.weight has shape (320, 16)" in message
    assert f"{checkpoint / 'config.json'} expects (320, 32)" in message


def test_missing_tensor_is_named(checkpoint):
    state = load_file(str(checkpoint / "model.safetensors"))
    del state["transformer.h.1.mlp.c_fc.bias"]
    _with_weights(checkpoint, state)
    with pytest.raises(CheckpointError, match=r"tensor transformer\.h\.1\.mlp\.c_fc\.bias is missing "
                                              r"\(.*config\.json expects shape \(64,\)\)"):
        load_model(checkpoint)


def test_more_layers_than_the_weights_hold_is_refused(checkpoint):
    _with_config(checkpoint, n_layer=3)
    with pytest.raises(CheckpointError, match=r"tensor transformer\.h\.2\.ln_1\.weight is missing"):
        load_model(checkpoint)


def test_extra_and_integer_tensors_are_refused(checkpoint):
    state = load_file(str(checkpoint / "model.safetensors"))
    _with_weights(checkpoint, {**state, "transformer.h.9.attn.c_attn.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"does not have: transformer\.h\.9\.attn\.c_attn\.weight"):
        load_model(checkpoint)
    _with_weights(checkpoint, {**state, "transformer.ln_f.weight": torch.ones(16, dtype=torch.int64)})
    with pytest.raises(CheckpointError, match=r"tensor transformer\.ln_f\.weight is I64"):
        load_model(checkpoint)


def test_index_must_list_the_config_and_weights_it_loads(checkpoint, tmp_path):
    # An index that leaves config.json out would leave it unchecked: a symlink to anywhere.
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(CONFIG.to_dict()))
    (checkpoint / "config.json").unlink()
    (checkpoint / "config.json").symlink_to(outside)
    index = json.loads((checkpoint / "checkpoint.json").read_text())
    del index["files"]["config.json"]
    (checkpoint / "checkpoint.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="checkpoint.json: does not list config.json"):
        load_model(checkpoint)


def test_real_checkpoint_still_loads_bit_for_bit(checkpoint):
    model = load_model(checkpoint)
    expected = GPT(CONFIG, seed=3).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


# --- transformers directories -----------------------------------------------------------------


@pytest.mark.parametrize("field", ["n_layer", "n_embd", "n_positions", "vocab_size", "parameters"])
def test_hf_sizes_over_the_limits_are_refused(tmp_path, field):
    changes = {"parameters": {"n_layer": 1024, "n_embd": 8192, "n_head": 64},
               "n_embd": {"n_embd": 10**7}}.get(field, {field: 10**9})
    hf = _hf_dir(tmp_path, **changes)
    with pytest.raises(CheckpointError, match="config.json: invalid GPT-2 config") as err:
        import_hf(hf)
    assert "exceeds the limit of" in str(err.value) or "over the limit of" in str(err.value)


def test_hf_config_missing_a_field_is_named(tmp_path):
    hf = _hf_dir(tmp_path)
    config = json.loads((hf / "config.json").read_text())
    del config["n_embd"]
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="config.json: missing field.s. n_embd"):
        import_hf(hf)


def test_hf_shapes_are_compared_in_transformers_layout(tmp_path):
    hf = _hf_dir(tmp_path, n_embd=32)
    with pytest.raises(CheckpointError, match=r"tensor transformer\.wte\.weight has shape \(300, 16\), "
                                              r".*config\.json expects \(300, 32\)"):
        import_hf(hf)
    # A Conv1D weight stored the nn.Linear way round is refused, naming both orientations.
    hf = _hf_dir(tmp_path)
    state = load_file(str(hf / "model.safetensors"))
    key = "transformer.h.0.attn.c_attn.weight"
    state[key] = state[key].t().contiguous()
    save_file(state, str(hf / "model.safetensors"))
    with pytest.raises(CheckpointError, match=rf"tensor {key} has shape \(48, 16\), .*expects \(16, 48\)"):
        import_hf(hf)


def test_hf_file_without_the_transformer_prefix_still_imports(tmp_path):
    hf = _hf_dir(tmp_path)  # as GPT2Model (OpenAI's own files) saves it
    state = load_file(str(hf / "model.safetensors"))
    save_file({k.removeprefix("transformer."): v for k, v in state.items()}, str(hf / "model.safetensors"))
    model = import_hf(hf)
    expected = GPT(CONFIG.replace(padded_vocab_size=None), seed=3).state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())


# --- every CLI that reads a checkpoint or transformers directory --------------------------------

# The CLI's own entry point, with its imports done before the clock starts: the figure is the
# refusal's time, not torch's import time.
DRIVER = """\
import resource, sys, time
import evaluation.generate, evaluation.heldout, evaluation.hellaswag
import hgpt.cli, model.checkpoint, model.hf_interop
start = time.perf_counter()
rc = hgpt.cli.main(sys.argv[1:])
print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(rc)
"""


def _confine():
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


def _refused(*args, expect: str):
    """Run `hgpt ARGS` in a 3 GiB address space; assert exit 2, one line naming `expect` and a
    small peak RSS: the refusal came before any large allocation. (Wall time is not asserted:
    it measures the CPU, not the refusal; a 2 s bound failed on a slower 2-core CPU.)"""
    done = subprocess.run([sys.executable, "-c", DRIVER, *map(str, args)], capture_output=True,
                          text=True, preexec_fn=_confine, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hgpt {args[0]}: error: "), done.stderr[-3000:]
    assert expect in lines[0]
    _, peak_kib = map(float, done.stdout.split()[-2:])
    assert peak_kib < PEAK_RSS_LIMIT_KIB, peak_kib


def _command(name, source, tmp_path):
    if name == "eval":  # a real validation shard, so the refusal can only be the checkpoint's
        from pipelines.shard_format import write_shard

        (tmp_path / "shards").mkdir(exist_ok=True)
        write_shard(tmp_path / "shards" / "val_000000.bin", list(range(64)))
    return {"sample": ("sample", source), "eval": ("eval", source, "--val-dir", tmp_path / "shards"),
            "export-hf": ("export-hf", source, tmp_path / "out"),
            "import-hf": ("import-hf", source, tmp_path / "out")}[name]


@pytest.mark.parametrize("field", HOSTILE)
def test_sample_refuses_every_oversized_field(checkpoint, tmp_path, field):
    _with_config(checkpoint, **HOSTILE[field])
    _refused("sample", checkpoint, expect=_limit_text(field))


@pytest.mark.parametrize("command", ["eval", "export-hf"])
def test_eval_and_export_refuse_a_billion_layers(checkpoint, tmp_path, command):
    _with_config(checkpoint, n_layer=10**9)
    _refused(*_command(command, checkpoint, tmp_path), expect=_limit_text("n_layer"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["sample", "eval", "export-hf"])
def test_checkpoint_clis_refuse_a_huge_header_length(checkpoint, tmp_path, command):
    _huge_header_length(checkpoint / "model.safetensors")
    _reindex(checkpoint)
    _refused(*_command(command, checkpoint, tmp_path),
             expect=f"header length {2**62} exceeds the limit of {MAX_HEADER_BYTES} bytes")


def test_export_refuses_shapes_that_disagree(checkpoint, tmp_path):
    _with_config(checkpoint, n_embd=32)
    _refused("export-hf", checkpoint, tmp_path / "out",
             expect="tensor transformer.wte.weight has shape (320, 16)")


@pytest.mark.parametrize("changes, expect", [
    ({"n_layer": 10**9}, "GPTConfig.n_layer = 1000000000 exceeds the limit of"),
    ({"n_embd": 10**7}, "GPTConfig.n_embd = 10000000 exceeds the limit of"),
    ({"n_positions": 10**9}, "GPTConfig.block_size = 1000000000 exceeds the limit of"),
    ({"vocab_size": 10**9}, "GPTConfig.vocab_size = 1000000000 exceeds the limit of"),
    ({"n_embd": 32}, "tensor transformer.wte.weight has shape (300, 16)"),
    ({"n_head": "2"}, "GPTConfig.n_head must be a positive integer, got '2'"),
], ids=["n_layer", "n_embd", "n_positions", "vocab_size", "shape", "type"])
def test_import_hf_refuses_hostile_configs(tmp_path, changes, expect):
    hf = _hf_dir(tmp_path, **changes)
    _refused("import-hf", hf, tmp_path / "out", expect=expect)
    assert not (tmp_path / "out").exists()


def test_import_hf_refuses_a_huge_header_length(tmp_path):
    hf = _hf_dir(tmp_path)
    _huge_header_length(hf / "model.safetensors")
    _refused("import-hf", hf, tmp_path / "out", expect=f"exceeds the limit of {MAX_HEADER_BYTES} bytes")


def test_import_hf_refuses_a_fifo_for_a_config_without_hanging(tmp_path):
    hf = _hf_dir(tmp_path)
    (hf / "config.json").unlink()
    os.mkfifo(hf / "config.json")
    _refused("import-hf", hf, tmp_path / "out", expect="config.json: not a regular file")
