"""Everything a dataset holds lives in memory (images uint8 N*C*H*W bytes, token ids int64 N*T*8
bytes); refuse before allocating when that cannot fit. Loading peaks at about twice the arrays
(the splits are copies), so twice the estimate is what must fit in the memory available."""

from __future__ import annotations

from edgeprune.errors import UserError

PEAK_FACTOR = 2


def human(n: float) -> str:
    """Bytes in decimal units (1 GB = 10^9 bytes), as the README's examples count them."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def available() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(n_bytes: int, what: str, fix: str) -> None:
    """A UserError naming `fix` when `n_bytes` (the arrays' size) cannot be held twice over."""
    free = available()
    if n_bytes * PEAK_FACTOR > free:
        raise UserError(
            f"{what} take {human(n_bytes)} in memory (about {human(n_bytes * PEAK_FACTOR)} while loading), "
            f"more than the {human(free)} available; {fix}."
        )
