"""What every layer of bertflow agrees on, at the bottom: it imports nothing of ours.

- ``storage``: every path through fsspec (atomic writes, URLs, listing);
- ``layout``: the files a step writes and another reads (shard names, schemas, the
  ``seq{L}`` folders, the vocabulary and its special tokens, the loss's ignore label);
- ``hashing``: the hash that is the same in every process and on every machine;
- ``config``: the base of every job's own schema, and its command line.

``pipelines`` and ``trainer`` import this and nothing else of ours (never each other);
``infra`` imports them only where a kind runs its job (tests/test_layers.py).
"""
