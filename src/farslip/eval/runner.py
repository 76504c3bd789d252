"""The per-dataset loop every evaluation shares: run each set, keep its error, compute the headline."""
from __future__ import annotations

import logging
import math
import time
from typing import Callable, Sequence

log = logging.getLogger(__name__)


class DatasetFailed(RuntimeError):
    """A data set could not be evaluated; the message names the set and the cause.

    ``partial`` holds the task's result so far (the sets done before, and this failure), so a
    caller can still report them.
    """

    def __init__(self, message: str, partial: dict):
        super().__init__(message)
        self.partial = partial


def run_datasets(task: str, names: Sequence[str], evaluate: Callable[[str], dict], headline: Sequence[str],
                 keep_going: bool) -> dict:
    """``{"datasets": {name: metrics}, "failed": {name: error}, "mean_<key>": ...}`` for one task.

    ``evaluate(name)`` returns one set's metrics. A failure raises DatasetFailed at once, or with
    ``keep_going`` is logged, recorded under ``failed`` and the remaining sets still run. The
    headline ``mean_<key>`` is the mean of ``key`` over the sets that succeeded (NaN if none).
    """
    datasets: dict[str, dict] = {}
    failed: dict[str, str] = {}
    result: dict = {"datasets": datasets, "failed": failed}
    for name in names:
        start = time.perf_counter()
        try:
            metrics = evaluate(name)
        except Exception as err:  # recorded and re-raised or reported: never swallowed
            message = f"{type(err).__name__}: {err}"
            failed[name] = message
            if not keep_going:
                raise DatasetFailed(f"{task} data set {name!r} failed: {message}", _with_means(result, headline)) from err
            log.error("%s data set %r failed: %s", task, name, message)
            continue
        metrics["seconds"] = round(time.perf_counter() - start, 3)
        datasets[name] = metrics
        log.info("%s %s: %s", task, name, ", ".join(f"{k}={metrics[k]:.2f}" for k in headline if k in metrics))
    return _with_means(result, headline)


def _with_means(result: dict, headline: Sequence[str]) -> dict:
    for key in headline:
        values = [m[key] for m in result["datasets"].values()]
        result[f"mean_{key}"] = sum(values) / len(values) if values else math.nan
    return result
