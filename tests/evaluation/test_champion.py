"""The champion rule, and the alias moves in a real MLflow registry (sqlite in tmp_path) only
when a checkpoint is better on the same validation tokens."""

import numpy as np
import pytest
import torch

from evaluation.champion import (
    ACC_NORM,
    VAL_BPB,
    VAL_DATA,
    VAL_LOSS,
    VAL_TOKENS,
    decide,
    promote_if_better,
)


def m(loss, acc=None, data="d0", tokens=1024):
    out = {VAL_LOSS: loss, VAL_DATA: data, VAL_TOKENS: tokens}
    if acc is not None:
        out[ACC_NORM] = acc
    return out


@pytest.mark.parametrize(
    "candidate, champion, promote, reason",
    [
        (m(3.0), None, True, "no champion yet"),
        (m(2.9), m(3.0), True, "lower val_loss"),
        (m(3.1), m(3.0), False, "higher val_loss"),
        (m(3.0), m(3.0), False, "tied"),  # equal never takes it
        (m(3.0, 0.30), m(3.0, 0.29), True, "higher hellaswag_acc_norm"),
        (m(3.0, 0.29), m(3.0, 0.29), False, "tied"),
        (m(3.1, 0.99), m(3.0, 0.20), False, "higher val_loss"),  # HellaSwag only breaks ties
        (m(2.9, data="d1"), m(3.0), False, "not comparable: val_data"),
        (m(2.9, tokens=512), m(3.0), False, "not comparable: val_tokens"),
        (m(float("nan")), None, False, "no finite"),
        (m(float("nan")), m(3.0), False, "no finite"),
        (m(2.9), {VAL_LOSS: None}, False, "champion has no finite"),
    ],
)
def test_decide(candidate, champion, promote, reason):
    decision = decide(candidate, champion)
    assert decision.promote is promote
    assert reason in decision.reason
    assert decision.numbers["candidate_val_loss"] == candidate[VAL_LOSS] or candidate[VAL_LOSS] != candidate[VAL_LOSS]
    if champion and champion.get(VAL_LOSS) is not None:
        assert decision.numbers["champion_val_loss"] == champion[VAL_LOSS]


def test_bits_per_byte_is_recorded_beside_the_loss():
    decision = decide({**m(2.9), VAL_BPB: 1.2}, {**m(3.0), VAL_BPB: 1.25})
    assert decision.promote
    assert decision.reason == "lower val_loss: 2.900000 < 3.000000 (val_bpb 1.2000 vs 1.2500)"
    assert (decision.numbers["candidate_val_bpb"], decision.numbers["champion_val_bpb"]) == (1.2, 1.25)


def test_min_delta_makes_small_gains_a_tie():
    assert not decide(m(2.999), m(3.0), min_delta=0.01).promote
    assert decide(m(2.98), m(3.0), min_delta=0.01).promote


# --- a real registry, real checkpoints -----------------------------------------------------

CONFIG_KW = dict(block_size=32, vocab_size=64, n_layer=1, n_head=2, n_embd=32)
PATTERN = np.tile(np.arange(48) % 64, 40)  # a repeating sequence: learnable in a few steps


def _trained(steps):
    from model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(**CONFIG_KW), seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    data = torch.from_numpy(PATTERN[: 8 * 33].reshape(8, 33).astype(np.int64))
    for _ in range(steps):
        _, loss = model(data[:, :-1], data[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture()
def registry(tmp_path):
    mlflow = pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    # Both URIs: an in-process Dagster run elsewhere in the session may have set a global
    # registry URI, which would otherwise win over the tracking URI for registry calls.
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.tracking.MlflowClient()
    client.create_registered_model("hgpt-test")
    yield mlflow, client
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def test_alias_moves_only_to_a_better_checkpoint(tmp_path, registry):
    mlflow, client = registry
    from evaluation.heldout import evaluate_loss, validation_fingerprint
    from model.checkpoint import load_model, write_checkpoint
    from pipelines.shard_format import write_shard

    shard = write_shard(tmp_path / "val_000000.bin", PATTERN)
    max_tokens = 640

    def metrics(model):
        result = evaluate_loss(model, [shard], max_tokens=max_tokens, seq_len=32)
        return {VAL_LOSS: result.loss, VAL_BPB: result.bpb, VAL_TOKENS: result.tokens,
                VAL_DATA: validation_fingerprint([shard], max_tokens)}

    def register(name, model):
        # As the training/evaluation glue does: the checkpoint is a run artifact, the model
        # version points at it.
        directory = write_checkpoint(tmp_path / name, model)
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(directory), "checkpoint")
        return str(client.create_model_version(
            "hgpt-test", source=f"runs:/{run.info.run_id}/checkpoint", run_id=run.info.run_id
        ).version)

    def champion():
        return client.get_registered_model("hgpt-test").aliases.get("champion")

    good, bad, best = _trained(15), _trained(0), _trained(60)
    mg, mb, mbest = metrics(good), metrics(bad), metrics(best)
    assert mbest[VAL_LOSS] < mg[VAL_LOSS] < mb[VAL_LOSS]

    v1 = register("good", good)
    first = promote_if_better("hgpt-test", v1, mg)
    assert first.promote and str(champion()) == v1

    v2 = register("bad", bad)  # worse: must never take the alias
    worse = promote_if_better("hgpt-test", v2, mb)
    assert not worse.promote and str(champion()) == v1
    assert worse.numbers["candidate_val_loss"] == mb[VAL_LOSS]
    assert worse.numbers["champion_val_loss"] == mg[VAL_LOSS]
    assert worse.numbers["candidate_val_bpb"] == mb[VAL_BPB] > 0
    assert float(client.get_model_version("hgpt-test", v2).tags["hgpt.val_bpb"]) == mb[VAL_BPB]
    assert client.get_model_version("hgpt-test", v2).tags["hgpt.decision"] == "kept"

    v3 = register("good-again", good)  # equal: does not take it either
    assert not promote_if_better("hgpt-test", v3, mg).promote and str(champion()) == v1

    # Better, with the champion's stored numbers from other validation data: the champion is
    # re-measured on the candidate's tokens (loaded back from its registered artifact).
    client.set_model_version_tag("hgpt-test", v1, "hgpt.val_data", "older-shards")
    reloaded = []

    def evaluate_version(mv):
        path = mlflow.artifacts.download_artifacts(mv.source, dst_path=str(tmp_path / f"dl{mv.version}"))
        reloaded.append(mv.version)
        return metrics(load_model(path))

    v4 = register("best", best)
    better = promote_if_better("hgpt-test", v4, mbest, evaluate_version=evaluate_version)
    assert [str(v) for v in reloaded] == [v1]
    assert better.promote and str(champion()) == v4
    assert better.numbers["champion_val_loss"] == pytest.approx(mg[VAL_LOSS])
    assert better.numbers["candidate_val_loss"] == mbest[VAL_LOSS]
    assert client.get_model_version("hgpt-test", v4).tags["hgpt.decision"] == "promoted"

    # Metrics read back from the version's own tags when none are passed.
    assert not promote_if_better("hgpt-test", v2).promote and str(champion()) == v4


def test_champion_measured_elsewhere_is_kept_without_a_way_to_remeasure(tmp_path, registry):
    _, client = registry
    v1 = client.create_model_version("hgpt-test", source=str(tmp_path)).version
    v2 = client.create_model_version("hgpt-test", source=str(tmp_path)).version
    assert promote_if_better("hgpt-test", v1, m(3.0, data="old")).promote
    decision = promote_if_better("hgpt-test", v2, m(2.0, data="new"))
    assert not decision.promote and "not comparable" in decision.reason
    assert client.get_registered_model("hgpt-test").aliases["champion"] == int(v1)
