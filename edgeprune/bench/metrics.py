"""Numbers from raw measurements: latency statistics, accuracy and macro-F1 (numpy only)."""

from __future__ import annotations

import numpy as np


def latency_stats(rounds_ms: list[list[float]], batch: int, floor_ms: list[float]) -> dict:
    """Percentiles over all runs, plus the median and minimum of the per-round medians.

    Round medians are what stays comparable across interleaved models: a burst of load from
    another process spoils a round, not every run of one model.
    """
    # Rounded to nanoseconds: the clock's resolution, and the JSON stays readable.
    r6 = lambda v: None if v is None else round(float(v), 6)
    runs = np.concatenate([np.asarray(r, dtype=np.float64) for r in rounds_ms])
    medians = np.array([np.median(r) for r in rounds_ms])
    mean = float(runs.mean())
    return {
        "p50_ms": r6(np.percentile(runs, 50)),
        "p90_ms": r6(np.percentile(runs, 90)),
        "p99_ms": r6(np.percentile(runs, 99)),
        "mean_ms": r6(mean),
        "std_ms": r6(runs.std(ddof=1) if runs.size > 1 else 0.0),
        "min_ms": r6(runs.min()),
        "round_median_ms": r6(np.median(medians)),
        "round_min_ms": r6(medians.min()),
        # From the round median, not the mean: one stall should not halve a typical rate.
        "throughput_sps": round(batch * 1000.0 / float(np.median(medians)), 1),
        "floor_p50_ms": r6(np.percentile(floor_ms, 50)) if len(floor_ms) else None,
        "runs": int(runs.size),
        "rounds": len(rounds_ms),
    }


def predictions(logits: np.ndarray) -> np.ndarray:
    """Class ids from logits: one column (or none) is a binary sigmoid model, else argmax."""
    logits = np.asarray(logits)
    if logits.ndim == 1 or logits.shape[-1] == 1:
        return (logits.reshape(len(logits)) > 0).astype(np.int64)
    return logits.reshape(len(logits), -1).argmax(axis=1).astype(np.int64)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    return float((y_true == y_pred).mean()) if y_true.size else float("nan")


def f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> float:
    """Macro-F1 for any number of classes: the unweighted mean of the per-class F1 over the classes
    present in either array (scikit-learn's f1_score(average="macro")). `num_classes` is unused,
    kept so callers written for the binary F1 still work."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.union1d(y_true, y_pred)
    if not classes.size:
        return 0.0
    scores = []
    for c in classes:
        tp = np.sum((y_pred == c) & (y_true == c))
        fp = np.sum((y_pred == c) & (y_true != c))
        fn = np.sum((y_pred != c) & (y_true == c))
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(scores))


NEAR_MAJORITY = 0.01  # accuracy within 1 point of the majority class's share: learned (almost) nothing


def majority_warning(accuracy: float | None, majority: float | None, n: int | None = None) -> str | None:
    """A warning when accuracy is within 1 point of (or below) always guessing the majority class."""
    if accuracy is None or majority is None or accuracy > majority + NEAR_MAJORITY:
        return None
    where = "within 1 point of" if accuracy >= majority - NEAR_MAJORITY else "below"
    on = f" of {n:,} test examples" if n else " of the test split"
    return (
        f"test accuracy {accuracy:.4f} is {where} the majority class's share {majority:.4f}{on}: "
        "the model does no better than always guessing that class."
    )
