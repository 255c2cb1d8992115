#!/usr/bin/env bash
# GPU readiness in one command, printing one JSON object (at most ~8 minutes on one H100/H200):
#   1. the tests marked `cuda` (tests/cuda): bf16 autocast training step, the fused loss's native
#      branch against autocast, our AdamW against torch's fused AdamW, the same generated tokens
#      on GPU and CPU, a one-process NCCL DDP step;
#   2. GPT-2 124M training throughput, bf16, B=16, T=1024, compiled: ours against transformers
#      compiled + fused AdamW, side by side in one process, with MFU (benchmarks/train_throughput.py);
#   3. GPT-2 124M greedy generation throughput, ours against transformers (sample_throughput.py).
#
#   benchmarks/gpu_check.sh             # on the GPU machine, after scripts/setup.sh test
#   benchmarks/gpu_check.sh --dry-run   # the same steps on the CPU with a tiny model (< 2 min)
# PYTHON overrides the interpreter (default: the project's .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
dry_run=0
[ "${1:-}" = "--dry-run" ] && dry_run=1
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

if [ "$dry_run" = 1 ]; then
    device=cpu
    train_args=(--preset tiny --override n_layer=1 n_head=1 n_embd=64 --batch 2 --seq 64
                --rounds 1 --steps 1)
    sample_args=(--presets tiny --override n_layer=1 --new-tokens 16 --repeats 1)
else
    device=cuda
    train_args=(--preset gpt2 --batch 16 --seq 1024 --rounds 3 --steps 5)
    sample_args=(--presets gpt2 --repeats 3)
fi

# Each step's output goes to a file; a failing step is recorded, the others still run.
set +e
"$py" -m pytest -q -m cuda tests/cuda -p no:cacheprovider >"$out/tests.txt" 2>&1
echo $? >"$out/tests.rc"
"$py" benchmarks/train_throughput.py --device "$device" --precision bf16 \
    --variants hf_compiled ours_compiled "${train_args[@]}" >"$out/train.json" 2>"$out/train.log"
echo $? >"$out/train.rc"
"$py" benchmarks/sample_throughput.py --device "$device" "${sample_args[@]}" \
    >"$out/sample.json" 2>"$out/sample.log"
echo $? >"$out/sample.rc"
set -e

"$py" - "$out" "$dry_run" <<'PY'
import json, re, sys
from pathlib import Path

out, dry_run = Path(sys.argv[1]), sys.argv[2] == "1"


def step(name: str, log: str) -> dict:
    rc = int((out / f"{name}.rc").read_text())
    result = {"rc": rc}
    if name == "tests":
        text = (out / "tests.txt").read_text()
        counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|error)", text)}
        result.update(counts=counts, tail=text.strip().splitlines()[-3:])
        return result
    try:
        result["result"] = json.loads((out / f"{name}.json").read_text())
    except ValueError:
        result["log_tail"] = (out / log).read_text().strip().splitlines()[-10:]
    return result


report = {"gpu_check": "dry-run on CPU, tiny model" if dry_run else "GPU",
          "tests": step("tests", "tests.txt"), "train": step("train", "train.log"),
          "sample": step("sample", "sample.log")}
train = report["train"].get("result", {}).get("bf16", {})
summary = {k: v for k, v in train.items() if k.startswith("ratio_") or k == "best_ours"}
summary.update({f"{k}_mfu": v["mfu"] for k, v in train.get("variants", {}).items()})
for r in report["sample"].get("result", {}).get("results", []):
    summary[f"generate_{r['preset']}_ratio"] = r["ours_ratio"]
    summary[f"generate_{r['preset']}_same_tokens"] = r["same_tokens"]
report["summary"] = summary
report["ok"] = all(report[k]["rc"] == 0 for k in ("tests", "train", "sample"))
print(json.dumps(report, indent=2))
sys.exit(0 if report["ok"] else 1)
PY
