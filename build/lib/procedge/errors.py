"""The one error type users see: a one-line message naming the problem and the fix."""


class ProcedgeError(Exception):
    """Bad input or a missing prerequisite; the CLI prints it on one line and exits with status 2."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))
