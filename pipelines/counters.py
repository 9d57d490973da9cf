"""Beam counters: ``Counters`` counts by name (created on first use), ``metric_counters``
reads them back from a finished pipeline. Every count of the jobs goes through them."""

from __future__ import annotations

import apache_beam as beam


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
        out[c.key.metric.name] = out.get(c.key.metric.name, 0) + int(c.committed or 0)
    return dict(sorted(out.items()))
