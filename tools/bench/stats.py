"""Arithmetic on measurements: percentiles, rates, and the median of repeated runs."""

import datetime
import math
import statistics


def pct(values, p):
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def ms_summary(seconds):
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None, "mean_ms": None}
    return {
        "n": len(seconds),
        "p50_ms": round(pct(seconds, 50) * 1000, 2),
        "p99_ms": round(pct(seconds, 99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
        "mean_ms": round(statistics.fmean(seconds) * 1000, 2),
    }


def sustained_rate(times):
    """Arrivals per second over the 10-90 % span (ramp-up and tail left out)."""
    times = sorted(times)
    n = len(times)
    if n < 2:
        return None
    if n < 50:
        span = times[-1] - times[0]
        return (n - 1) / span if span > 0 else None
    i, j = int(n * 0.1), int(n * 0.9)
    span = times[j] - times[i]
    return (j - i) / span if span > 0 else None


def stamp_to_ts(stamp):
    try:
        return datetime.datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return None


def median_run(runs, metric):
    """The run whose ``metric(run)`` is the (low) median over ``runs``, with
    every run kept beside it: ``{**that_run, "median_of": n, "runs": runs}``.

    One real run is the headline, not a mix of fields from several; the
    others show the spread. Runs whose metric is None (nothing measured)
    rank below the rest."""
    ranked = sorted(runs, key=lambda run: (metric(run) is not None, metric(run) or 0))
    measured = [run for run in ranked if metric(run) is not None]
    pick = measured[(len(measured) - 1) // 2] if measured else ranked[-1]
    return {**pick, "median_of": len(runs), "runs": runs}
