"""The Beam jobs. Importing the package picks Arrow's allocator for this process and the
worker processes it starts: jemalloc, which hands freed pages back to the system (the
wheels' default, mimalloc, keeps them; docs/benchmarks.md). Arrow reads
``ARROW_DEFAULT_MEMORY_POOL`` once, when pyarrow is first imported, so this comes first;
a user's own setting wins. Linux wheels only carry jemalloc."""

import os
import sys

if sys.platform.startswith("linux"):
    os.environ.setdefault("ARROW_DEFAULT_MEMORY_POOL", "jemalloc")
