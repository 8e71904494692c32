"""The one exception type that the command line turns into a single clear line."""

from __future__ import annotations


class QzooError(Exception):
    """A problem with the user's input or files: reported as one line, exit status 2, no traceback."""


class TrainingDiverged(QzooError):
    """The loss became NaN or infinite: the run cannot go on (tuning prunes such a trial)."""
