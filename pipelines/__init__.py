"""The Beam jobs. Importing the package picks Arrow's allocator for this process and the
worker processes it starts: jemalloc, which hands freed pages back to the system after a
second's delay (Arrow reads ``ARROW_DEFAULT_MEMORY_POOL`` once, when pyarrow is first
imported, so this must come first; a user's own setting wins). The wheels' default,
mimalloc, keeps what it freed: examples job, one process, 80 MB of text, 406-421 MB peak
with jemalloc against 523-537 MB; 2 workers 18.5-20.0 s wall against 19.7-21.0 with the
glibc allocator, whose immediate returns cost page faults (0.5-0.6 M against 1.2-1.7 M).
See ``docs/benchmarks.md``. Linux wheels only carry jemalloc."""

import os
import sys

if sys.platform.startswith("linux"):
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
