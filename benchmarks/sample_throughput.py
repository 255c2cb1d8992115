"""Greedy generation tokens/s: ours (KV cache, evaluation.generate) against transformers'
`GPT2LMHeadModel.generate` with the same weights, in one process, on this CPU.

    .venv/bin/python benchmarks/sample_throughput.py                      # tiny and gpt2 (124M)
    .venv/bin/python benchmarks/sample_throughput.py --presets tiny --repeats 9 --threads 1
    .venv/bin/python benchmarks/sample_throughput.py --checkpoint workspace/runs/<run> \
        --prompt "The kernel"          # a trained model and a real prompt (lookup's honest case)

Both sides: fp32, batch 1, the same random 32-token prompt, 128 new tokens, greedy, no early stop
(our stop_at_eot=False; transformers with eos_token_id=None, which also spares it the EOS
bookkeeping, its fastest setting), inference mode, torch threads as given. Weights are a seeded
random init of the preset, exported with export_hf and loaded by transformers (its default
attention, sdpa). One warm-up call per side, then the sides alternate `--repeats` times so
load from other processes hits both alike; the medians decide the ratio, and the outputs of
all sides are compared token for token. Prints one JSON object.

"ours" decodes one token per forward pass, like transformers: the like-for-like figure. Its step
is model/decode_step.py, and its greedy pick screens the LM head with an fp16 copy and settles
the few candidate rows in fp32 (model/screened_argmax.py): the model and every logit that
decides are fp32, and the tokens are checked equal to transformers' below.
"ours_lookup" is generate()'s default for a lone greedy prompt, prompt-lookup drafts checked
several per pass (evaluation/lookup_decoding.py): the same tokens, but its speed depends on how
repetitive the text is, and greedy text from random weights (this benchmark) is very repetitive,
so its figure here is an upper bound, not what a trained model's free text gets.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from evaluation.generate import generate  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402
from model.hf_interop import export_hf  # noqa: E402
from benchmarks.machine import cpu_bf16_flags, cpu_name  # noqa: E402

TARGETS = {"tiny": 1.5, "gpt2": 1.2}  # required speed-up over transformers (issue 7)


def bench_preset(preset: str, prompt_len: int, new_tokens: int, repeats: int,
                 device: str = "cpu", overrides: dict | None = None,
                 checkpoint: str | None = None, prompt_text: str | None = None) -> dict:
    import transformers

    if checkpoint:  # trained weights: greedy text is far less repetitive than random weights'
        from model.checkpoint import load_model, resolve_checkpoint

        model = load_model(resolve_checkpoint(checkpoint)).eval()
        preset = f"checkpoint:{Path(checkpoint).name}"
    else:
        model = GPT(GPTConfig.preset(preset, **(overrides or {})), seed=0).eval()
    if prompt_text:
        from model.tokenizer import EOT_TOKEN, get_encoding

        prompt = torch.tensor([[EOT_TOKEN] + get_encoding().encode_ordinary(prompt_text)])
    else:
        prompt = torch.randint(0, model.config.vocab_size, (1, prompt_len),
                               generator=torch.Generator().manual_seed(0))
    prompt_len = prompt.size(1)
    with tempfile.TemporaryDirectory() as tmp:
        export_hf(model, Path(tmp) / "hf")
        hf = transformers.GPT2LMHeadModel.from_pretrained(Path(tmp) / "hf").eval().to(device)
    model.to(device)
    prompt = prompt.to(device)
    gen_config = transformers.GenerationConfig(
        do_sample=False, max_new_tokens=new_tokens, eos_token_id=None, pad_token_id=0
    )
    mask = torch.ones_like(prompt)

    def ours() -> list[int]:  # one token per forward pass: the like-for-like comparison
        return generate(model, prompt.tolist(), new_tokens, temperature=0, stop_at_eot=False,
                        lookahead=0)[0]

    def ours_lookup() -> list[int]:  # generate()'s default for batch-1 greedy: prompt lookup
        return generate(model, prompt.tolist(), new_tokens, temperature=0, stop_at_eot=False)[0]

    def theirs() -> list[int]:
        with torch.inference_mode():
            out = hf.generate(prompt, attention_mask=mask, generation_config=gen_config)
        return out[0, prompt_len:].tolist()

    sides = {"ours": ours, "ours_lookup": ours_lookup, "transformers": theirs}
    outputs = {name: fn() for name, fn in sides.items()}  # also the warm-up of each side
    times = {name: [] for name in sides}
    for _ in range(repeats):
        for name, fn in sides.items():
            start = time.perf_counter()
            n = len(fn())  # token ids come back as Python ints: the device has finished
            times[name].append(n / (time.perf_counter() - start))
    med = {k: statistics.median(v) for k, v in times.items()}
    target = TARGETS.get(preset)
    result = {"preset": preset, "parameters": model.num_parameters(), "target_ratio": target}
    for name in ("ours", "ours_lookup"):
        ratio = med[name] / med["transformers"]
        # Each repeat runs the sides back to back: the median of per-repeat ratios is less
        # sensitive to load that changes between repeats than the ratio of medians.
        paired = statistics.median(a / b for a, b in zip(times[name], times["transformers"]))
        result.update({
            f"{name}_tok_s": round(med[name], 2),
            f"{name}_ratio": round(ratio, 3),
            f"{name}_ratio_paired": round(paired, 3),
            f"{name}_meets_target": None if target is None else ratio >= target,
        })
    result["transformers_tok_s"] = round(med["transformers"], 2)
    result["same_tokens"] = outputs["ours"] == outputs["ours_lookup"] == outputs["transformers"]
    # How repetitive the greedy text is (what prompt lookup feeds on): distinct new tokens.
    result["distinct_new_tokens"] = len(set(outputs["ours"]))
    result["tok_s_all"] = {k: [round(x, 1) for x in v] for k, v in times.items()}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "gpt2"])
    parser.add_argument("--prompt-len", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for both sides (default: torch's own)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--checkpoint", default=None,
                        help="a trained checkpoint or run directory instead of random weights")
    parser.add_argument("--prompt", default=None, help="prompt text instead of random tokens")
    parser.add_argument("--override", nargs="*", default=[], metavar="FIELD=INT",
                        help="model config overrides, e.g. n_layer=2 (smoke runs)")
    args = parser.parse_args(argv)
    overrides = {k: int(v) for k, v in (o.split("=", 1) for o in args.override)}
    if args.threads:
        torch.set_num_threads(args.threads)
    import transformers

    load_before = os.getloadavg()
    presets = ["checkpoint"] if args.checkpoint else args.presets
    results = [bench_preset(p, args.prompt_len, args.new_tokens, args.repeats, args.device,
                            overrides, args.checkpoint, args.prompt) for p in presets]
    print(json.dumps({
        "benchmark": "sample_throughput",
        "conditions": {
            "device": args.device, "cpu": cpu_name(), "cpu_bf16_flags": cpu_bf16_flags(),
            "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "dtype": "float32", "batch": 1,
            "prompt_len": args.prompt_len, "new_tokens": args.new_tokens, "greedy": True,
            "repeats": args.repeats, "torch": torch.__version__,
            "transformers": transformers.__version__,
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "results": results,
    }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
