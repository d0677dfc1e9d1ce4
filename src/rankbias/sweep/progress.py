"""One progress display for a whole sweep: runs done / total, elapsed, estimated remaining.

On a terminal it is a bar (tqdm) on stderr; otherwise (logs, CI, a file) it writes one line at
most every ``interval`` seconds, and one at the end.
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class SweepProgress:
    def __init__(self, total: int, enabled: bool = True, stream=None, interval: float = 30.0):
        self.total, self.done, self.failed = total, 0, 0
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.interval = interval
        self.start = self.last = time.monotonic()
        self.bar = None
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, unit="run", desc="sweep", file=self.stream)

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        text = f"sweep: {self.done}/{self.total} runs done"
        if self.failed:
            text += f" ({self.failed} failed)"
        text += f", {_clock(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", ~{_clock(elapsed / self.done * (self.total - self.done))} remaining"
        return text

    def update(self, runs: int, failed: int = 0) -> None:
        self.done += runs
        self.failed += failed
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(runs)
            if failed:
                self.bar.set_postfix(failed=self.failed)
        elif time.monotonic() - self.last >= self.interval or self.done == self.total:
            self.last = time.monotonic()
            print(self.line(), file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
