"""The one exception type for mistakes the user can fix (bad flag, missing data, empty folder, ...).

The CLI prints it as a single line and exits with status 2, as it does OS errors of the user's paths (see
``cli.USER_OS_ERRORS``); every other exception is a programming error and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or environment, with a message that says what was wrong and what to do."""


class FailedOnAnotherRank(UserError):
    """Raised on the other processes of a torchrun run when rank 0 failed in a computation it makes for all of them
    (``dist.computed_once``): rank 0 reports the error; the others end quietly with the same exit status."""
