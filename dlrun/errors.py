"""DlrunError: the one exception a user ever sees as a message (one line, exit code 2)."""

from __future__ import annotations


class DlrunError(Exception):
    """A user-facing error: bad config, bad file, unknown name, missing device.

    The CLI prints it as one line (plus an optional hint), exits with code 2 and marks the
    MLflow run FAILED with the message. Anything else is a bug and keeps its traceback.
    """

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


def did_you_mean(name: str, choices) -> str:
    """A short 'valid: ...' phrase, with the closest match first when there is one."""
    import difflib

    choices = sorted(choices)
    close = difflib.get_close_matches(str(name), choices, n=1)
    valid = ", ".join(choices)
    return f"did you mean '{close[0]}'? valid: {valid}" if close else f"valid: {valid}"


class Interrupted(BaseException):
    """A run stopped by a signal (Ctrl-C, SIGTERM): the run ends KILLED with `reason` and the
    process exits with `code` (130 for SIGINT, 143 for SIGTERM). A BaseException so that no
    `except Exception` on the way swallows it."""

    def __init__(self, reason: str, code: int):
        super().__init__(reason)
        self.reason = reason
        self.code = code
