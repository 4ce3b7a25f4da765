"""Progress of long steps in one style: fine-tuning steps, [CLS] feature extraction, probe
training, sweeps (APEX, silencing).

Every long-running library function takes `progress: Progress`:

* ``None`` (the library default): a bar only where a person watches (stderr is a terminal, or
  a Jupyter kernel runs); nothing in scripts, logs and tests.
* ``True`` (what the CLI passes unless ``--quiet``): a bar with rate and ETA on a terminal;
  when stderr is not a terminal (a log file, CI), quiet line-based reports instead, about one
  every 10% of the work or every 30 s (a step done within 5 s logs only its summary), e.g.
  ``fine-tuning, epoch 1/2: 58/232 steps (25%), 1.93 steps/s, ETA 1m30s``.
* ``False``: silent.
* a callable: called with a `Status` after every update and once at the end (``finished``),
  for notebooks or other front ends that draw their own display.

    with tracker(len(batches), "fine-tuning", unit="steps", progress=True) as bar:
        for b in batches:
            ...
            bar.update()
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Callable, TextIO, Union

LINE_PARTS = 10  # line mode: a line at every further tenth of the work ...
LINE_SECONDS = 30.0  # ... or after this many seconds without one, whichever comes first;
LINE_AFTER = 5.0  # no line before a step has run this long: a fast step logs its summary only


@dataclasses.dataclass(frozen=True)
class Status:
    """Where a tracked step stands.

    Attributes:
        desc: what is being done (e.g. "[CLS] features").
        unit: what is counted (e.g. "inputs").
        done: units finished so far.
        total: units in all.
        elapsed: seconds since the tracker started.
        rate: units per second since the first update (None until a second one); on the final
            report done / elapsed.
        eta: estimated seconds left (None while unknown).
        finished: True on the final report (`close`).
    """

    desc: str
    unit: str
    done: int
    total: int
    elapsed: float
    rate: float | None
    eta: float | None
    finished: bool = False

    def line(self) -> str:
        """The one-line report, e.g. "probes: 120/400 steps (30%), 41.2 steps/s, ETA 17s"."""
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        rate = "" if self.rate is None else f", {_number(self.rate)} {self.unit}/s"
        if self.finished:
            return f"{self.desc}: {self.done}/{self.total} {self.unit}{pct} in {duration(self.elapsed)}{rate}"
        eta = f", ETA {duration(self.eta)}" if self.eta is not None else ""
        return f"{self.desc}: {self.done}/{self.total} {self.unit}{pct}{rate}{eta}"


Progress = Union[bool, None, Callable[[Status], None]]


def duration(seconds: float) -> str:
    """Seconds for people: "7s", "4m05s", "1h02m"."""
    s = int(round(max(seconds, 0.0)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _number(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


def interactive(stream: TextIO | None = None) -> bool:
    """True where a person watches the output: `stream` (default stderr) is a terminal, or the
    code runs in a Jupyter kernel."""
    stream = sys.stderr if stream is None else stream
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):  # closed or replaced streams
        return False
    return "ipykernel" in sys.modules


class Tracker:
    """Counts units of one step and reports them (see the module docstring for the modes).

    Rate and ETA leave out the time before the first update (compilation, warm-up): the rate is
    (units done since the first update) / (seconds since it), so a one-off compile does not
    inflate the ETA of the remaining work; until a second update both are unknown (None). The
    final status (`close`) reports the overall rate, done / elapsed.
    """

    def __init__(self, total: int, desc: str, unit: str = "it", progress: Progress = None, *,
                 stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic):
        if total < 0:
            raise ValueError(f"a progress total must be >= 0; got {total}")
        self.total, self.desc, self.unit = int(total), desc, unit
        self.done = 0
        self._clock = clock
        self._stream = sys.stderr if stream is None else stream
        self._t0 = clock()
        self._first: tuple[float, int] | None = None  # (time, done) at the first update
        self._closed = False
        self._bar = None
        self._callback: Callable[[Status], None] | None = None
        self._lines = False
        if callable(progress):
            self._callback = progress
        elif progress is True or (progress is None and interactive(self._stream)):
            if progress is True and not interactive(self._stream):
                self._lines = True
                self._part = 0  # the last tenth reported
                self._last_line = self._t0
            else:
                from tqdm.auto import tqdm

                self._bar = tqdm(total=self.total, desc=desc, unit=unit, file=self._stream, smoothing=0.1,
                                 dynamic_ncols=True, leave=True)
        elif progress not in (None, False):
            raise ValueError(f"progress must be True, False, None or a callable; got {progress!r}")

    def status(self, finished: bool = False) -> Status:
        """The current `Status` (rate and ETA as described in the class docstring)."""
        now = self._clock()
        elapsed = now - self._t0
        rate = None
        if finished:
            rate = self.done / elapsed if elapsed > 0 and self.done > 0 else None
        elif self._first is not None:
            t1, d1 = self._first
            if self.done > d1 and now > t1:
                rate = (self.done - d1) / (now - t1)
        eta = None
        if rate is not None and rate > 0 and not finished:
            eta = max(self.total - self.done, 0) / rate
        return Status(self.desc, self.unit, self.done, self.total, elapsed, rate, eta, finished)

    def update(self, n: int = 1) -> None:
        """Marks `n` more units done and reports if this mode reports now."""
        if self._closed or n == 0:
            return
        self.done += n
        if self._first is None:
            self._first = (self._clock(), self.done)
        if self._bar is not None:
            self._bar.update(n)
        elif self._callback is not None:
            self._callback(self.status())
        elif self._lines:
            now = self._clock()
            part = self.done * LINE_PARTS // self.total if self.total else LINE_PARTS  # integers: no rounding
            if part > self._part or now - self._last_line >= LINE_SECONDS:
                if self.done < self.total and now - self._t0 >= LINE_AFTER:  # the last line is close()'s
                    print(self.status().line(), file=self._stream, flush=True)
                self._last_line, self._part = now, part

    def close(self) -> None:
        """Ends the step: the bar is closed, line mode prints a summary, a callable gets a final
        `Status` with finished=True. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self._callback is not None:
            self._callback(self.status(finished=True))
        elif self._lines:
            print(self.status(finished=True).line(), file=self._stream, flush=True)

    def write(self, text: str) -> None:
        """Prints a line to stdout without breaking a bar drawn on the terminal."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
        else:
            print(text, flush=True)

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def tracker(total: int, desc: str, unit: str = "it", progress: Progress = None, **kw) -> Tracker:
    """A `Tracker` of `total` units (use it as a context manager, call `update(n)`)."""
    return Tracker(total, desc, unit, progress, **kw)
