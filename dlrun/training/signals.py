"""Ctrl-C and SIGTERM during a run: the first asks the run to stop after the current step (the
run ends KILLED with the reason, keeping its best checkpoint and a backup to resume from); a
second Ctrl-C, or a signal outside fit, interrupts at once."""

from __future__ import annotations

import contextlib
import signal
import threading

from dlrun.errors import Interrupted


class StopSignals:
    """Ctrl-C and SIGTERM for one run.

    During fit the first signal asks the task to stop after the current step (the run handle's
    stop flag; Keras' model.stop_training) and the run ends KILLED once fit returns, outside
    TensorFlow (an exception raised inside a step could end in SIGSEGV under load). Outside
    fit, or at a second Ctrl-C, the run is interrupted at once.
    """

    REASONS = {signal.SIGINT: ("interrupted (Ctrl-C)", 130), signal.SIGTERM: ("terminated (SIGTERM)", 143)}

    def __init__(self):
        self.run = None
        self.code = 130
        self.count = 0

    def handler(self, signum, frame):
        reason, code = self.REASONS[signum]
        self.count += 1
        self.code = code
        if self.run is not None and self.count == 1:
            self.run.request_stop(reason)
            return
        raise Interrupted(reason, code)

    @contextlib.contextmanager
    def during_fit(self, run):
        self.run = run
        try:
            yield
        finally:
            self.run = None


@contextlib.contextmanager
def stop_signals():
    """Install the run's SIGINT/SIGTERM handler (main thread only) for the duration of a run."""
    state = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {s: signal.signal(s, state.handler) for s in state.REASONS}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
