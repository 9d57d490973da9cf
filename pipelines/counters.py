"""Beam counters by name, created on first use: ``count("pages_redirect")``."""

from __future__ import annotations

import apache_beam as beam


class Counters:
    def __init__(self, namespace: str):
        self.namespace = namespace
        self._counters = {}

    def __call__(self, name: str, n: int = 1) -> None:
        c = self._counters.get(name)
        if c is None:
            c = self._counters[name] = beam.metrics.Metrics.counter(self.namespace, name)
        c.inc(n)
