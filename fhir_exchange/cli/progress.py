"""The progress bar of the long commands (load, reindex, migrate, backup, restore)."""

from __future__ import annotations

import sys
import time


class Progress:
    """A progress bar (tqdm) on stderr counting ``unit`` (files, versions, pages) out of ``total`` (None: not
    known, a counter). On a terminal it is redrawn in place, elsewhere (a log file, a pipe) every few
    seconds; either way the output ends with a newline when it closes, and :meth:`note` prints a message
    on a line of its own."""

    def __init__(self, total: int | None, unit: str, started: float | None = None, desc: str | None = None) -> None:
        from tqdm import tqdm

        self.started = time.perf_counter() if started is None else started
        tty = sys.stderr.isatty()
        # "12/40 files" rather than tqdm's "12/40 [...]": the count says what it counts.
        counted = "{n_fmt}/{total_fmt}{unit}" if total is not None else "{n_fmt}{unit}"
        self.bar = tqdm(total=total, unit=f" {unit}", desc=desc, file=sys.stderr, leave=True, dynamic_ncols=tty,
                        mininterval=0.1 if tty else 5.0, ascii=not tty,
                        bar_format="{l_bar}{bar}| " + counted + " [{elapsed}<{remaining}, {rate_fmt}]"
                        if total is not None else "{desc}" + counted + " [{elapsed}, {rate_fmt}]")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def update(self, n: int) -> None:
        """``n`` done so far (not an increment)."""
        if self.bar.total is not None and n > self.bar.total:  # the total grew (a live source)
            self.bar.total = n
        self.bar.update(n - self.bar.n)

    def note(self, message: str) -> None:
        self.bar.write(message, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
