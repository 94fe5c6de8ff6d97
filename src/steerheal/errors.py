"""One exception type for problems a user can fix.

Every error the CLI shows is a `SteerhealError`: one line that names the problem and the fix.
Anything else that escapes is a bug and keeps its traceback.
"""


class SteerhealError(Exception):
    """A user-facing error: what went wrong and what to do about it."""

    def __init__(self, problem: str, fix: str):
        # One line, always: messages quoted from other libraries may carry newlines.
        self.problem = " ".join(problem.split()).rstrip(".")
        self.fix = " ".join(fix.split()).rstrip(".")
        super().__init__(f"{self.problem}. Fix: {self.fix}.")


class CalibrationError(SteerhealError):
    """The iso-KL target could not be bracketed (too high or too low for this vector)."""
