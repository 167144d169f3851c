"""The one exception type for mistakes a user can make and fix."""


class SnganError(Exception):
    """A problem the user can fix: bad config, missing data, unreadable file.

    The CLI prints its message as one line on stderr and exits with `exit_code`
    (2 for usage errors such as a bad config, 1 for everything else).
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class UsageError(SnganError):
    """Bad arguments or config: exit code 2, like argparse/typer usage errors."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)
