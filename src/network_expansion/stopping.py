"""Stopping a training run cleanly: Ctrl-C (SIGINT), SIGTERM and SIGHUP (a dropped ssh
session) end it between two steps, after a checkpoint, instead of wherever the signal lands."""

from __future__ import annotations

import signal
import threading


class StopNow(KeyboardInterrupt):
    """A second Ctrl-C: stop at once, without saving (the step under way may be half done)."""


class StopOnSignal:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP ask the training loop to stop after the step under
    way, save, and return; a second Ctrl-C stops at once.

    Needed because MindSpore's runtime installs a SIGINT handler of its own once its first
    op has run, which ends the process with SIGTERM (exit 143): nothing saved. Every call
    of a compiled graph installs it again, and MindSpore's dataset engine installs its own
    SIGINT and SIGTERM handlers at a pipeline's first `next` (not when the iterator is
    made). So the loop calls `rearm` at the top of every batch it takes from a pipeline and
    `check` between steps. Outside the main thread (where Python cannot take signals) this
    is a no-op and Ctrl-C behaves as before.
    """

    NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated",
             **({signal.SIGHUP: "hung up"} if hasattr(signal, "SIGHUP") else {})}  # no SIGHUP on Windows
    EXIT_CODES = {"interrupted": 130, "terminated": 143, "hung up": 129}  # 128 + the signal's number

    def __init__(self):
        self.received = None
        self._previous = {}
        self._inside = False
        self._active = threading.current_thread() is threading.main_thread()

    @property
    def name(self) -> str:
        return self.NAMES.get(self.received, "interrupted")

    def __enter__(self):
        self.received, self._inside = None, True
        if self._active:
            self._previous = {s: signal.getsignal(s) for s in self.NAMES}
            self._arm()
        return self

    def __exit__(self, *exc):
        self._inside = False
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)

    def _arm(self):
        for number in self.NAMES:
            signal.signal(number, self._handle)

    def _handle(self, number, frame):
        if self.received is not None:
            raise StopNow  # asked twice: stop now, wherever the loop is
        self.received = number

    def check(self) -> None:
        """Raise KeyboardInterrupt if a signal came; re-install the handlers."""
        if self.received is not None:
            raise KeyboardInterrupt
        self.rearm()

    def rearm(self) -> None:
        """Put Python's handlers back (a new graph or dataset pipeline may have replaced them)."""
        if self._active and self._inside:
            self._arm()

    def ignore(self) -> None:
        if self._active and self._inside:
            for number in self.NAMES:
                signal.signal(number, signal.SIG_IGN)
