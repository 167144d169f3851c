"""The one exception type for mistakes a user can make and fix."""


class SnganError(Exception):
    """A problem the user can fix: bad config, missing data, unreadable file. The CLI prints its
    message as one line on stderr and exits with `exit_code`."""

    exit_code = 1


class UsageError(SnganError):
    """Bad arguments or config: exit code 2, like argparse/typer usage errors."""

    exit_code = 2
