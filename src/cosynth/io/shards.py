"""Deterministic partition of crystals into shards by id, for runs split over jobs or a cluster.

A crystal's shard depends only on its id and the number of shards (a keyed hash, not Python's
salted ``hash``), so shard ``i`` of ``N`` holds the same crystals on every machine and the union
of the N shards is exactly one unsharded run.
"""

from __future__ import annotations

import hashlib

__all__ = ["parse_shard", "shard_of"]


def shard_of(key: str, n_shards: int) -> int:
    """The shard (0 … n_shards-1) of the crystal id ``key``."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8, person=b"cosynth-shard").digest()
    return int.from_bytes(digest, "big") % n_shards


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` (0-based ``i``) as ``(i, N)``; a ValueError in words otherwise."""
    try:
        index, total = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"a shard looks like i/N with whole numbers, e.g. 0/8; got {text!r}") from None
    if total < 1 or not 0 <= index < total:
        raise ValueError(f"shard {text!r}: N must be at least 1 and i within 0 … N-1")
    return index, total
