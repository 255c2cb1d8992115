"""Which checkpoint is the best one: the `champion` alias in the MLflow model registry.

    from evaluation.champion import decide, promote_if_better
    decision = promote_if_better("hgpt", candidate_version="7", candidate_metrics={...})

`decide` is the rule, a pure function: lower held-out loss wins; when the two losses tie (within
`min_delta`) and both have HellaSwag acc_norm, the higher acc_norm wins. A worse or equal
candidate never takes the alias, and neither does one measured on other validation tokens (the
adapter then re-measures the champion if it is given a way to). `promote_if_better` is the
MLflow adapter; mlflow is imported inside it only, so the rule imports without mlflow.

Metrics live as tags on the model versions (`hgpt.val_loss`, `hgpt.val_bpb`, `hgpt.val_tokens`,
`hgpt.val_data`, `hgpt.hellaswag_acc_norm`): a version carries its own numbers wherever it is
looked at. Bits per byte is recorded beside the loss in the decision (its numbers, and its
reason when both sides have it); on the same validation tokens it orders models as the loss
does, so the rule itself needs only the loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping

CHAMPION_ALIAS = "champion"
TAG_PREFIX = "hgpt."
# Metric keys. val_data identifies the validation tokens (e.g. the sha256 of the shard prefix);
# two losses are comparable only on the same val_data and val_tokens.
VAL_LOSS, VAL_TOKENS, VAL_DATA, ACC_NORM = "val_loss", "val_tokens", "val_data", "hellaswag_acc_norm"
VAL_BPB = "val_bpb"
METRIC_KEYS = (VAL_LOSS, VAL_BPB, VAL_TOKENS, VAL_DATA, ACC_NORM)


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    numbers: dict = field(default_factory=dict)  # candidate_* and champion_* metrics compared

    def to_dict(self) -> dict:
        return asdict(self)


def _float(metrics: Mapping | None, key: str) -> float | None:
    if not metrics or metrics.get(key) in (None, ""):
        return None
    return float(metrics[key])


def decide(
    candidate: Mapping, champion: Mapping | None, min_delta: float = 0.0
) -> Decision:
    """Should `candidate` replace `champion`? Both map METRIC_KEYS to values (champion None:
    there is none yet). `min_delta`: how much lower the loss must be to count as better."""
    cand_loss = _float(candidate, VAL_LOSS)
    numbers = {f"candidate_{k}": candidate.get(k) for k in METRIC_KEYS if candidate.get(k) is not None}
    if champion:
        numbers.update({f"champion_{k}": champion.get(k) for k in METRIC_KEYS if champion.get(k) is not None})
    if cand_loss is None or not math.isfinite(cand_loss):
        return Decision(False, f"candidate has no finite {VAL_LOSS} ({cand_loss})", numbers)
    if not champion:
        return Decision(True, "no champion yet", numbers)
    champ_loss = _float(champion, VAL_LOSS)
    if champ_loss is None or not math.isfinite(champ_loss):
        return Decision(False, f"champion has no finite {VAL_LOSS}; re-measure it first", numbers)
    for key in (VAL_DATA, VAL_TOKENS):
        a, b = candidate.get(key), champion.get(key)
        if a is not None and b is not None and _same_key(key, a) != _same_key(key, b):
            return Decision(
                False, f"not comparable: {key} differs (candidate {a}, champion {b})", numbers
            )
    cand_bpb, champ_bpb = _float(candidate, VAL_BPB), _float(champion, VAL_BPB)
    bpb = (f" ({VAL_BPB} {cand_bpb:.4f} vs {champ_bpb:.4f})"
           if cand_bpb is not None and champ_bpb is not None else "")
    if cand_loss < champ_loss - min_delta:
        return Decision(True, f"lower {VAL_LOSS}: {cand_loss:.6f} < {champ_loss:.6f}{bpb}", numbers)
    if cand_loss > champ_loss + min_delta:
        return Decision(False, f"higher {VAL_LOSS}: {cand_loss:.6f} > {champ_loss:.6f}{bpb}", numbers)
    cand_acc, champ_acc = _float(candidate, ACC_NORM), _float(champion, ACC_NORM)
    if cand_acc is not None and champ_acc is not None and cand_acc > champ_acc:
        return Decision(
            True, f"{VAL_LOSS} tied, higher {ACC_NORM}: {cand_acc:.4f} > {champ_acc:.4f}", numbers
        )
    return Decision(False, f"not better: {VAL_LOSS} tied ({cand_loss:.6f}) and no HellaSwag win", numbers)


def metrics_to_tags(metrics: Mapping) -> dict[str, str]:
    return {TAG_PREFIX + k: str(v) for k, v in metrics.items() if k in METRIC_KEYS and v is not None}


def tags_to_metrics(tags: Mapping[str, str]) -> dict:
    out = {}
    for key in METRIC_KEYS:
        value = tags.get(TAG_PREFIX + key)
        if value is not None:
            out[key] = _same_key(key, value) if key in (VAL_DATA, VAL_TOKENS) else float(value)
    return out


def _same_key(key: str, value):
    """Canonical form of a data-identity value: tags come back as strings ("1024" or "1024.0")."""
    return int(float(value)) if key == VAL_TOKENS else str(value)


def promote_if_better(
    model_name: str,
    candidate_version: str | int,
    candidate_metrics: Mapping | None = None,
    evaluate_version: Callable[[object], Mapping] | None = None,
    alias: str = CHAMPION_ALIAS,
    min_delta: float = 0.0,
    client=None,
) -> Decision:
    """Compare a registered model version with the one holding `alias` and move the alias only
    when the candidate is better. Returns the decision with both sets of numbers.

    candidate_metrics: the candidate's metrics (stored as tags on its version); None reads them
        from its tags.
    evaluate_version: called with the champion's ModelVersion when its stored metrics are missing
        or were measured on other validation tokens; returns fresh metrics on the candidate's
        tokens (which are then stored on it). Without it such a champion is kept.
    The decision is recorded on the candidate version as tags (hgpt.decision, hgpt.decision_reason).
    """
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    version = str(candidate_version)
    candidate = client.get_model_version(model_name, version)
    if candidate_metrics is None:
        candidate_metrics = tags_to_metrics(candidate.tags)
    else:
        for key, value in metrics_to_tags(candidate_metrics).items():
            client.set_model_version_tag(model_name, version, key, value)

    # The registered model's alias map, rather than get_model_version_by_alias, whose "no such
    # alias" error is not distinguishable by code from a malformed request.
    holder = client.get_registered_model(model_name).aliases.get(alias)
    champion = client.get_model_version(model_name, str(holder)) if holder is not None else None

    if champion is not None and str(champion.version) == version:
        numbers = {f"candidate_{k}": v for k, v in candidate_metrics.items() if v is not None}
        decision = Decision(False, f"version {version} already holds '{alias}'", numbers)
    else:
        champion_metrics = tags_to_metrics(champion.tags) if champion is not None else None
        if champion is not None and evaluate_version is not None and _stale(champion_metrics, candidate_metrics):
            champion_metrics = dict(evaluate_version(champion))
            for key, value in metrics_to_tags(champion_metrics).items():
                client.set_model_version_tag(model_name, champion.version, key, value)
        if champion is not None and not champion_metrics:
            champion_metrics = {VAL_LOSS: None}  # present but unmeasured: decide() keeps it
        decision = decide(candidate_metrics, champion_metrics, min_delta=min_delta)
        decision.numbers["candidate_version"] = version
        if champion is not None:
            decision.numbers["champion_version"] = str(champion.version)
        if decision.promote:
            client.set_registered_model_alias(model_name, alias, version)
    client.set_model_version_tag(model_name, version, TAG_PREFIX + "decision",
                                 "promoted" if decision.promote else "kept")
    client.set_model_version_tag(model_name, version, TAG_PREFIX + "decision_reason", decision.reason)
    return decision


def _stale(champion_metrics: Mapping | None, candidate_metrics: Mapping) -> bool:
    """Champion numbers that cannot be compared with the candidate's as they stand."""
    if not champion_metrics or champion_metrics.get(VAL_LOSS) is None:
        return True
    return any(
        candidate_metrics.get(k) is not None
        and (champion_metrics.get(k) is None
             or _same_key(k, champion_metrics[k]) != _same_key(k, candidate_metrics[k]))
        for k in (VAL_DATA, VAL_TOKENS)
    )
