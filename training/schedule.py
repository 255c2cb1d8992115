"""Learning-rate schedule: linear warmup to max_lr, cosine decay to min_lr, then constant.

A pure function of the step, so a resumed run, a plot and a test all get the same numbers.
"""

from __future__ import annotations

import math


def get_lr(step: int, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based).

    Warmup: (step + 1) / warmup_steps * max_lr for step < warmup_steps, so step 0 already
    moves (build-nanogpt's convention). Cosine: from max_lr at warmup_steps down to min_lr at
    max_steps. After max_steps: min_lr.
    """
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)  # 0 -> 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)
