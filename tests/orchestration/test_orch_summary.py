"""The main job's summary: each held-out number with the tokens it was measured on."""

from pipelines.orchestration.main_job import _val_lines


def test_both_validation_losses_say_what_they_were_computed_on():
    evaluation = {"val_loss": 6.5605, "val_bpb": 2.3012, "val_tokens": 20480, "unigram_baseline": 6.9}
    training = {"val_loss": 6.479, "val_bpb": 2.2716, "val_tokens": 16384}
    assert _val_lines(evaluation, training) == [
        "  val loss:       6.5605 nats/token, 2.3012 bits/byte on 20,480 val tokens "
        "(evaluation; unigram baseline 6.9000)",
        "  training's val: 6.4790 nats/token, 2.2716 bits/byte on the first 16,384 of them "
        "(eval_tokens, at the last step)",
    ]
    assert len(_val_lines(evaluation, {})) == 1  # no val shards in training: no second line
