"""What machine a benchmark figure came from: the CPU's name and its bf16 features. A figure from
a CPU with AMX/AVX512-BF16 says nothing about one without (and the reverse), so every benchmark
prints these next to its numbers."""

from __future__ import annotations

import platform
from pathlib import Path

from training.fused_loss import bf16_cpu_flags


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def cpu_bf16_flags() -> list[str]:
    """The bf16 dot-product features this CPU lists (empty: no bf16 units), parsed the way the
    fused loss's detector parses them."""
    return bf16_cpu_flags(_cpuinfo())
