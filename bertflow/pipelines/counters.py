"""Beam counters: ``Counters`` counts by name (created on first use), ``metric_counters``
reads them back from a finished pipeline. Every count of the jobs goes through them.
``skip_file`` counts an input file that is skipped and notes which and why, so that the
job's caller can name it once the pipeline is done (``skipped_files``)."""

from __future__ import annotations

import logging
from typing import Callable

import apache_beam as beam

log = logging.getLogger(__name__)
# Skipped files are counters in a namespace of their own, one per ``url: why``: Beam's
# local runner merges the string sets of several bundles into one bundle's set.
SKIPPED = "bertflow.skipped_files"


class Counters:
    """``count = Counters("wikipedia"); count("pages_redirect"); count("words", 12)``"""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self._counters = {}

    def __call__(self, name: str, n: int = 1) -> None:
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = beam.metrics.Metrics.counter(self.namespace, name)
        c.inc(n)


def metric_counters(result) -> dict[str, int]:
    """The counters of a finished pipeline as ``{name: value}`` (committed values, summed
    over namespaces)."""
    out: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == SKIPPED:
            continue
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(c.committed or 0)
    return dict(sorted(out.items()))


def skip_file(count: Callable[[str], None], counter: str, url: str, why: str) -> None:
    """Count ``counter`` for a skipped input file, log it, and note ``url: why`` in the job's
    metrics: a worker's log reaches neither the step's log nor a remote job's console, the
    job's metrics do."""
    count(counter)
    beam.metrics.Metrics.counter(SKIPPED, f"{url}: {why}").inc()
    log.warning("%s skipped: %s", url, why)


def skipped_files(result) -> list[str]:
    """The ``url: why`` notes of every file a finished pipeline skipped, sorted."""
    return sorted({c.key.metric.name for c in result.metrics().query()["counters"]
                   if c.key.metric.namespace == SKIPPED and c.committed})


def log_skipped(result, logger: logging.Logger) -> None:
    """Name each skipped file in the caller's log (the step's log, in a workflow)."""
    for note in skipped_files(result):
        logger.warning("skipped %s", note)
