"""Progress lines: a bar on a terminal, throttled plain lines elsewhere, with rate and ETA."""

import io

from evaluation.progress import Progress, eta_seconds, format_duration


def test_plain_lines_are_throttled_and_end_with_the_total():
    out = io.StringIO()
    with Progress("eval val", total=100, unit="tok", stream=out, every_s=3600) as p:
        for _ in range(10):
            p.update(10)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("eval val: 100/100 tok (100%) | ")

    out = io.StringIO()
    with Progress("eval val", total=100, unit="tok", stream=out, every_s=0) as p:
        p.update_to(25)
    first = out.getvalue().splitlines()[0]
    assert first.startswith("eval val: 25/100 tok (25%) | ") and "| eta " in first
    assert "\r" not in out.getvalue()


def test_a_terminal_gets_a_tqdm_bar():
    out = io.StringIO()
    with Progress("sample", total=4, unit="sample", stream=out, tty=True) as p:
        p.update_to(2, total=4)
        p.update(2)
    assert "\r" in out.getvalue() and "sample" in out.getvalue()


def test_eta_and_durations():
    assert eta_seconds(0, 10, 5.0) is None
    assert eta_seconds(5, 10, 5.0) == 5.0
    assert [format_duration(s) for s in (3, 65, 7380)] == ["3s", "1m05s", "2h03m"]


def test_emit_takes_the_lines_instead_of_the_stream():
    out, got = io.StringIO(), []
    with Progress("eval val", total=10, stream=out, tty=True, emit=got.append, every_s=0) as p:
        p.update(5)
        p.update(5)
    assert out.getvalue() == ""
    assert len(got) == 2 and got[0].startswith("eval val: 5/10 it (50%)")
    assert got[1].startswith("eval val: 10/10 it (100%)")
