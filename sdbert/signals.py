"""Stopping a run on SIGTERM / SIGINT: the exception that records the stop, and the handlers outside training.

Training has its own handlers (:class:`sdbert.resume.Preemption`: finish the optimizer step, save, stop);
everywhere else in a run (start-up, data preparation, the final test) :func:`stop_on_signals` stops at
once. Either way :class:`RunInterrupted` reaches ``sdbert.run``, which writes ``"status": "interrupted"``
and exits with 128 + the signal number.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


class RunInterrupted(Exception):
    """A run stopped on a signal, after saving ``checkpoint`` (None: no new one) at optimizer step ``step``."""

    def __init__(self, signum: int, checkpoint: str | None, step: int) -> None:
        self.signum = int(signum)
        self.checkpoint = checkpoint
        self.step = int(step)
        name = signal.Signals(self.signum).name
        where = f"checkpoint {checkpoint}" if checkpoint else "no new checkpoint"
        super().__init__(f"interrupted by {name} at optimizer step {step}; {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextmanager
def stop_on_signals(step: Callable[[], int]) -> Iterator[None]:
    """SIGTERM / SIGINT during a run, outside training (start-up, data preparation, testing): raise
    :class:`RunInterrupted` at once (after ``step()`` optimizer steps, no new checkpoint).

    During training :class:`sdbert.resume.Preemption` replaces these handlers (it stops at a step boundary and saves)
    and puts them back when training ends; Lightning calls them after its own SIGTERM handler. The
    handlers before the block are restored after it. Off the main thread (where signals cannot be
    handled) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise RunInterrupted(signum, None, step())

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)
