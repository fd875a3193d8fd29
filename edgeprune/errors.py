"""Errors a user can cause. The CLI prints their message as one sentence and exits non-zero."""


class UserError(Exception):
    """Bad input that the user can fix; the message names the fix."""

    exit_code = 2


def unknown_choice(kind: str, name: str, choices) -> UserError:
    """The error for a name that is not one of `choices`, suggesting the closest one."""
    import difflib

    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(f"Unknown {kind} '{name}'; choose one of {', '.join(choices)}.{hint}")


class BudgetWarning(UserWarning):
    """Pruning cannot reach (or did not reach) what was asked: a budget below the model's floor
    (frozen layers, --min-width), or a schedule with no pruning epoch. Warned by `Pruner` when it
    is known; `edgeprune` commands print it as one line."""


class DataNotFound(UserError):
    """A dataset is neither local nor reachable."""

    exit_code = 3


class GuardWarning(UserWarning):
    """The accuracy guard's tolerance is below its validation set's noise, so its decisions may be
    chance. Warned by `Pruner` when the reference is measured; `edgeprune` commands print it as one line."""
