"""How a training run ends other than by finishing.

Each is a `TfllmError`, so the CLI prints it as one line and exits with its
`exit_code`; each message says what was kept on disk and how to go on. They
live apart from the loop so that every part of it (the controller, the
parameter-server coordination, the trainer) can raise them without importing
one another.
"""

from __future__ import annotations

from tfllm.errors import TfllmError


class TrainingInterrupted(TfllmError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved and the run can resume."""

    exit_code = 130  # the shell's convention for "stopped by Ctrl-C"


class ClusterFailure(TfllmError):
    """A parameter server (or the cluster) went away; the last checkpoint is resumable."""

    exit_code = 75  # EX_TEMPFAIL: restart the cluster and run again


class NonFiniteLoss(TfllmError):
    """The loss became NaN/Inf; the last good checkpoint is kept, nothing newer saved."""
