"""Errors a user can cause. The CLI prints their message as one sentence and exits non-zero."""

from __future__ import annotations

import contextlib
import errno
import math
import os


class UserError(Exception):
    """Bad input that the user can fix; the message names the fix."""

    exit_code = 2


class ArgumentError(UserError):
    """A bad value of a library argument, named as a Python caller writes it (`threshold=`). A command
    that takes the value from a flag reports `in_flags()`: the same sentence naming its flags."""

    def __init__(self, message: str, *arguments: str):
        super().__init__(message)
        self.arguments = arguments  # the argument names the message writes as `name=`

    def in_flags(self, flags: dict[str, str] | None = None) -> UserError:
        """The sentence with each `name=` written as its flag: `flags[name]`, else --name-with-dashes."""
        flags = flags or {}
        message = str(self)
        for name in sorted(self.arguments, key=len, reverse=True):  # target_macs= before macs=
            message = message.replace(f"{name}=", flags.get(name, "--" + name.replace("_", "-")))
        return UserError(message)


def unknown_choice(kind: str, name: str, choices) -> UserError:
    """The error for a name that is not one of `choices`, suggesting the closest one."""
    import difflib

    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(f"Unknown {kind} '{name}'; choose one of {', '.join(choices)}.{hint}")


def first_line(e: BaseException, limit: int | None = None) -> str:
    """An exception as one clause for a sentence: its type and the first line of its message (a
    SyntaxError's own message, without the file and line its text repeats), cut to `limit` characters."""
    if isinstance(e, SyntaxError) and e.msg:
        return f"{type(e).__name__}: {e.msg}"
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    return f"{type(e).__name__}: {lines[0].rstrip('.')[:limit]}" if lines else type(e).__name__


def import_extra(module: str, needed_by: str, extra: str, why=first_line):
    """The optional package `module`, imported; else one sentence saying that `needed_by` needs it and
    which extra installs it (`why` describes the error of an install that is there but broken)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"{needed_by} needs {module}, which is not installed; pip install 'edgeprune[{extra}]'."
        ) from None
    except Exception as e:  # noqa: BLE001 - a broken install (a version too old or too new for this torch)
        raise UserError(
            f"{needed_by} needs {module}, which fails to import ({why(e)}); "
            f"reinstall it with pip install -U 'edgeprune[{extra}]'."
        ) from None


class BudgetWarning(UserWarning):
    """Pruning cannot reach (or did not reach) what was asked: a budget below the model's floor
    (frozen layers, --min-width), or a schedule with no pruning epoch. Warned by `Pruner` when it
    is known; `edgeprune` commands print it as one line."""


class DataNotFound(UserError):
    """A dataset is neither local nor reachable."""

    exit_code = 3


def check_finite(flag: str, value) -> None:
    """The one rule for every numeric option: NaN and infinity are refused, whatever else it allows."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{flag} must be a finite number, not {value}; pass an ordinary number.")


# What the machine can refuse and the user can fix: errno -> (what happened, the fix). `{where}` is
# the file or folder concerned, `{dir}` the folder holding it.
_OS_FIXES = {
    errno.EACCES: ("access to {where} is denied", "give this user access to {dir} or choose another path"),
    errno.EPERM: ("the system does not permit changing {where}", "make {dir} writable or choose another path"),
    errno.EROFS: ("{where} is on a read-only file system", "choose a path on a writable one or remount it read-write"),
    errno.ENOSPC: ("no space is left on the device holding {where}", "free some space there or choose another path"),
    errno.EDQUOT: ("the disk quota of the device holding {where} is used up", "free some space or choose another path"),
    errno.EFBIG: ("{where} would be larger than its file system allows", "choose a path on another file system"),
    errno.ENAMETOOLONG: ("the path {where} is too long for its file system", "choose a shorter path or name"),
}


def os_error(e: OSError, where: str | os.PathLike | None = None) -> UserError | None:
    """One sentence for an operating-system refusal a user can fix (permission, read-only file system,
    full disk, name too long), naming the path and the fix; None for any other OSError. `where` names the
    path when the error itself carries none (a write that ran out of space has no file name)."""
    if e.errno not in _OS_FIXES:
        return None
    path = e.filename if e.filename is not None else where
    path = os.fsdecode(path) if path is not None else "a file being written"
    folder = os.path.dirname(os.path.abspath(path)) if e.filename is not None or where is not None else "its folder"
    what, fix = _OS_FIXES[e.errno]
    return UserError(f"{what.format(where=path)}; {fix.format(dir=folder)}.")


@contextlib.contextmanager
def writing_into(where: str | os.PathLike):
    """Inside, an OSError that names no file (a write that ran out of space) is raised again naming `where`,
    so the one sentence the CLI prints for it can say where space or permission is missing."""
    try:
        yield
    except OSError as e:
        if e.filename is None and e.errno in _OS_FIXES:
            raise OSError(e.errno, e.strerror, os.fspath(where)) from e
        raise


def machine_refusal(e: BaseException) -> OSError | None:
    """The OSError of a refusal `os_error` knows, in `e` or in what it was raised from (a library that
    wraps a full disk in its own exception), else None. Catch-all handlers re-raise it, so a full disk is
    not misreported as, say, a model the exporter cannot handle."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError) and e.errno in _OS_FIXES:
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


class GuardWarning(UserWarning):
    """The accuracy guard's tolerance is below its validation set's noise, so its decisions may be
    chance. Warned by `Pruner` when the reference is measured; `edgeprune` commands print it as one line."""
