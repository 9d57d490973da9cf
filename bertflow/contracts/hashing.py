"""A hash that is the same in every process and on every machine (Python's ``hash`` is
salted per process): where randomness, shards and orders come from."""

from __future__ import annotations

import hashlib
from typing import Any, Callable


def _part(part: Any) -> bytes:
    return str(part).encode("utf-8") + b"\x1f"  # the separator: ("ab", "c") != ("a", "bc")


def stable_hash(*parts: Any) -> int:
    """A 64-bit hash of ``parts``."""
    h = hashlib.blake2b(digest_size=8)
    for part in parts:
        h.update(_part(part))
    return int.from_bytes(h.digest(), "little")


def hash_to_bytes(h: int) -> bytes:
    """A hash as it crosses a Beam transform: 8 bytes, big-endian, so they sort as the ints
    do. Beam codes an ``int`` as a signed 64-bit varint, which half of all hashes overflow."""
    return h.to_bytes(8, "big")


def stable_hasher(*prefix: Any) -> Callable[[Any], int]:
    """``key -> stable_hash(*prefix, key)``, the prefix hashed once (for a hash per row)."""
    start = hashlib.blake2b(digest_size=8)
    for part in prefix:
        start.update(_part(part))

    def hash_key(key: Any) -> int:
        h = start.copy()
        h.update(_part(key))
        return int.from_bytes(h.digest(), "little")

    return hash_key
