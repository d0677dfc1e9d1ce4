"""One progress display for a whole sweep: runs done, share of the estimated work done, elapsed
time and time left.

**Work.** The unit is a run's estimated arithmetic, known when the sweep is planned: FLOPs of one
member's epoch (:func:`~rankbias.sweep.plan.epoch_flops`, counted on a meta forward pass of its
model) × the epochs it still trains. The time left is elapsed × work left / work done: the rate
of all workers together, measured on the work done so far, applied to the work left (not run
counts, so a sweep whose large models train first is not told it will end soon, or the reverse).

**Within a cohort.** A running run's progress is read from its store: ``status.json`` holds the
epoch of its last record, rewritten at every record by whichever process trains it (this one, a
worker process or a Ray task). Reading it needs no channel from the workers, works the same for
every executor (Ray with the results on a shared file system, as it requires anyway), survives a
worker that dies, and costs one small read per unfinished run per line. Its resolution is
``record.every`` epochs; statuses older than this display (an earlier, interrupted sweep's) count
for nothing.

**Output.** On a terminal, a tqdm bar of runs on stderr whose postfix (work done, time left) is
refreshed every few seconds. Otherwise (a log, CI): a first line saying what will train (runs,
cohorts, workers, estimated work), then a line every ``interval`` seconds (30) while cohorts
train, whether or not one finished, and one at the end; each log line starts with the time of day.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..store.run_store import RunStore

LOG_INTERVAL = 30.0  # seconds between log lines
BAR_REFRESH = 5.0  # seconds between refreshes of the bar's estimate


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _flops(value: float) -> str:
    """``value`` FLOP with an SI prefix: ``3.2 TFLOP``."""
    for prefix in ("", "k", "M", "G", "T", "P"):
        if value < 1000 or prefix == "P":
            return f"{value:.3g} {prefix}FLOP"
        value /= 1000
    raise AssertionError("unreachable")


@dataclass
class Work:
    """One run's share of a sweep: its store, estimated FLOPs per epoch, the epochs it trains."""

    run_dir: Path
    epoch_flops: float
    start: int  # the epoch it resumes from
    end: int  # train.epochs
    finished: bool = False  # its cohort reported it (done, diverged, failed or reused)

    @property
    def total(self) -> float:
        return self.epoch_flops * max(self.end - self.start, 0)

    def done(self, since: float) -> float:
        """Estimated FLOPs trained: all once finished, else up to the epoch of its last record
        written at or after ``since`` (a ``time.time()``)."""
        if self.finished:
            return self.total
        try:
            status = RunStore.at(self.run_dir).status()
        except Exception:  # noqa: BLE001  being replaced, or damaged (the sweep deals with that): no progress
            return 0.0
        if not status or status.get("epoch") is None or status.get("time", 0) < since:
            return 0.0
        return self.epoch_flops * min(max(int(status["epoch"]) - self.start, 0), self.end - self.start)


def plan_work(plan, results: Path) -> dict[str, Work]:
    """Run id → :class:`Work` for every run of ``plan``'s cohorts (a :class:`~.plan.Plan`)."""
    return {
        config.run_id(): Work(results / config.run_id(), cohort.epoch_flops, cohort.resume_epoch, config.train.epochs)
        for cohort in plan.cohorts
        for config in cohort.configs
    }


class SweepProgress:
    """The display of one sweep of ``total`` runs; see the module docstring.

    ``terminal_bar``: on a terminal, draw the bar (off when the sweep's one cohort shows its own
    per-epoch bar); logs get their lines either way. ``interval``: seconds between log lines.
    """

    def __init__(self, total: int, enabled: bool = True, stream=None, interval: float | None = None,
                 terminal_bar: bool = True):  # fmt: skip
        self.total, self.done, self.failed = total, 0, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.interval = LOG_INTERVAL if interval is None else interval
        self.terminal = bool(getattr(self.stream, "isatty", lambda: False)())
        self.terminal_bar = terminal_bar
        self.work: dict[str, Work] = {}
        self.start = self.last = time.monotonic()
        self.since = time.time()
        self.bar = None
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    # -- what the sweep calls ------------------------------------------------------------------
    def begin(self, work: dict[str, Work], headline: str) -> None:
        """Cohorts start training: ``work`` is theirs (added to the display's), ``headline`` says
        what trains where; the first line, then the periodic lines (a background thread)."""
        with self._lock:
            self.work.update(work)
            total = sum(w.total for w in work.values())
        if not self.enabled:
            return
        self._print(f"{headline}: {len(work)} run(s) to train, {self.done} of {self.total} already done, "
                    f"estimated work {_flops(total)}")  # fmt: skip
        if self.terminal and self.terminal_bar and self.bar is None:
            from tqdm.auto import tqdm

            fmt = "{desc}: {n_fmt}/{total_fmt} runs |{bar}| [{elapsed}{postfix}]"
            self.bar = tqdm(total=self.total, initial=self.done, desc="sweep", file=self.stream, bar_format=fmt)
        if self._ticker is None and (self.bar is not None or not self.terminal):
            self._ticker = threading.Thread(target=self._tick, name="sweep-progress", daemon=True)
            self._ticker.start()

    def update(self, run_ids: Iterable[str], failed: int = 0) -> None:
        """Runs reported finished (done, diverged, failed, or found finished)."""
        run_ids = list(run_ids)
        with self._lock:
            for run_id in run_ids:
                if run_id in self.work:
                    self.work[run_id].finished = True
            self.done += len(run_ids)
            self.failed += failed
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(len(run_ids))
            self._refresh_bar()
        elif not self.terminal and (time.monotonic() - self.last >= self.interval or self.done == self.total):
            self._emit()

    def close(self) -> None:
        """Stop the periodic lines; in a log, a last line unless the final one was written."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and not self.terminal and self.done < self.total and self.work:
            self._emit()

    # -- the numbers -----------------------------------------------------------------------------
    def estimate(self) -> tuple[float, float, float | None]:
        """(work done, total work, seconds left or None before any work is done), in FLOPs."""
        with self._lock:
            work = list(self.work.values())
        total = sum(w.total for w in work)
        done = sum(w.done(self.since) for w in work)
        elapsed = time.monotonic() - self.start
        left = elapsed * max(total - done, 0.0) / done if done > 0 else None
        return done, total, left

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        text = f"sweep: {self.done}/{self.total} runs done"
        if self.failed:
            text += f" ({self.failed} failed)"
        if self.done < self.total:
            text += ", " + self._work_text(elapsed=_clock(elapsed))
        else:
            text += f", {_clock(elapsed)} elapsed"
        return text

    def _work_text(self, elapsed: str | None = None) -> str:
        done, total, left = self.estimate()
        share = f"{100 * done / total:.0f} % of the estimated work" if total > 0 else "no work estimated"
        when = f", {elapsed} elapsed" if elapsed else ""
        rest = f"~{_clock(left)} remaining" if left is not None else "time left known after the first record"
        return f"{share}{when}, {rest}"

    # -- output ------------------------------------------------------------------------------------
    def _print(self, text: str) -> None:
        if self.terminal:
            if self.bar is not None:
                self.bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)
        else:
            print(f"{time.strftime('%H:%M:%S')} {text}", file=self.stream, flush=True)

    def _emit(self) -> None:
        with self._lock:
            self.last = time.monotonic()
            self._print(self.line())

    def _refresh_bar(self) -> None:
        bar = self.bar
        if bar is not None:
            bar.set_postfix_str(self._work_text().replace(" of the estimated work", " of the work"))

    def _tick(self) -> None:
        period = BAR_REFRESH if self.bar is not None else self.interval
        while not self._stop.wait(min(period, 1.0)):
            if self.done >= self.total or time.monotonic() - self.last < period:
                continue
            if self.bar is not None:
                self.last = time.monotonic()
                self._refresh_bar()
            else:
                self._emit()
