"""The one exception type that the command line turns into a single clear line, and the exit codes."""

from __future__ import annotations

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it; a signal N that stops a run exits 128 + N


class QzooError(Exception):
    """A problem with the user's input or files: reported as one line, exit status 2, no traceback."""


class TrainingDiverged(QzooError):
    """The loss became NaN or infinite: the run cannot go on (tuning prunes such a trial)."""
