"""User-facing errors.

Anything a user can cause (a bad flag, a missing file, a malformed row) raises a
subclass of `TfllmError`. The CLI wrapper prints such errors as one line on
stderr and exits non-zero, without a traceback; every other exception is a bug
and keeps its traceback.
"""


class TfllmError(Exception):
    """An error caused by user input; its message is one self-contained line."""

    exit_code = 2  # what the CLI exits with (130 for an interrupted run)


class ConfigError(TfllmError):
    """A config value or flag is missing, of the wrong type, or out of range."""


class DataError(TfllmError):
    """A data file is missing, empty, binary, not UTF-8, or malformed."""


class WorkdirError(TfllmError):
    """A workdir lacks what a command needs (tokenizer, checkpoint, config)."""
