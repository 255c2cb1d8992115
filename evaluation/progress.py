"""Progress of a long command on stderr: a tqdm bar on a terminal, a plain line every few
seconds otherwise (a log file or a pipe gets no bar's carriage returns).

    with Progress("eval", total=n_tokens, unit="tok") as progress:
        progress.update_to(done)       # or progress.update(n), or update_to(done, total)

Where the lines belong to a log of their own (a Dagster run's), `emit=context.log.info` sends
them there instead of to stderr, never as a bar, so they are not shown twice.

Each line says done/total, the rate and the time left:

    eval: 16384/65536 tok (25%) | 812 tok/s | eta 1m00s
"""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    """3s, 1m05s, 2h03m: short enough for a log line."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def eta_seconds(done: float, total: float, elapsed: float) -> float | None:
    """Time left at the rate so far; None before anything is done."""
    if done <= 0 or elapsed <= 0:
        return None
    return max(0.0, (total - done) * elapsed / done)


class Progress:
    """done/total of one task. `tty=None` decides by the stream (a bar only on a terminal);
    without one a line is printed at most every `every_s` seconds, and once at the end.
    `emit(line)`, if given, receives the lines instead of the stream (and there is no bar)."""

    def __init__(self, desc: str, total: int, unit: str = "it", stream=None,
                 every_s: float = 5.0, tty: bool | None = None, emit=None):
        self.desc, self.total, self.unit = desc, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.emit = emit
        self.done = 0
        self.t0 = self._last = time.monotonic()
        if emit is not None:
            tty = False
        elif tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self._tty = bool(tty)
        self._bar = None  # made at the first update, when the total is known

    def _new_bar(self):
        from tqdm import tqdm

        return tqdm(total=self.total, desc=self.desc, unit=self.unit, file=self.stream,
                    dynamic_ncols=True, leave=False, unit_scale=True)

    def update(self, n: int = 1) -> None:
        self.update_to(self.done + n)

    def update_to(self, done: int, total: int | None = None) -> None:
        """`done` so far (and the total, when it is learnt only as the work starts)."""
        if total is not None and total != self.total:
            self.total = total
            if self._bar is not None:
                self._bar.total = total
                self._bar.refresh()
        if self._tty and self._bar is None:
            self._bar = self._new_bar()
        if self._bar is not None:
            self._bar.update(done - self.done)
            self.done = done
            return
        self.done = done
        now = time.monotonic()
        if now - self._last >= self.every_s and done < self.total:
            self._last = now
            self._line()

    def line(self) -> str:
        elapsed = time.monotonic() - self.t0
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        rate = self.done / elapsed if elapsed > 0 else 0.0
        text = f"{self.desc}: {self.done}/{self.total} {self.unit}{pct} | {rate:.0f} {self.unit}/s"
        eta = eta_seconds(self.done, self.total, elapsed)
        if self.done < self.total and eta is not None:
            text += f" | eta {format_duration(eta)}"
        else:
            text += f" | {format_duration(elapsed)}"
        return text

    def _line(self) -> None:
        if self.emit is not None:
            self.emit(self.line())
        else:
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self._tty:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
        elif self.done:  # one closing line: how much, how fast, how long
            self._line()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
