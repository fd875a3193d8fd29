"""Errors a user can cause. The CLI prints their message as one sentence and exits non-zero."""


class UserError(Exception):
    """Bad input that the user can fix; the message names the fix."""

    exit_code = 2


class DataNotFound(UserError):
    """A dataset is neither local nor reachable."""

    exit_code = 3
