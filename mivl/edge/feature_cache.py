"""Image features cached per tile: a frame set is encoded once, an unchanged camera never again.

A tile's key is a digest of its normalised pixels, i.e. of everything that produced it (the
frame's content, the tiling, the resize and the normalisation). In the six-camera layout each
camera fills exactly two of the twelve grid tiles, so a camera whose frame did not change keeps
its two keys and only the changed cameras' tiles and the thumbnail are encoded again. Bounded in
bytes, least recently used first out.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np


def tile_key(tile: np.ndarray) -> bytes:
    """A 16-byte digest of one (3, S, S) tile, shape and dtype included: SHA-256 cut to 16 bytes,
    which a CPU with SHA instructions hashes faster than BLAKE2b (x86's SHA-NI: 1.8x on the 31 MB
    of a six-camera question's 13 tiles, BENCHMARKS.md; ARMv8's cryptographic extension has them)."""
    h = hashlib.sha256()
    h.update(f"{tile.shape}{tile.dtype}".encode())
    h.update(np.ascontiguousarray(tile).data)
    return h.digest()[:16]


class FeatureCache:
    """key -> features (any array with `nbytes`: the runtime's float32 tiles, the trainer's
    tensors), LRU, at most max_bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: bytes) -> np.ndarray | None:
        feats = self._items.get(key)
        if feats is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return feats

    def put(self, key: bytes, feats: np.ndarray) -> None:
        if feats.nbytes > self.max_bytes:
            return
        if key in self._items:
            self.bytes -= self._items.pop(key).nbytes
        self._items[key] = feats
        self.bytes += feats.nbytes
        self._evict()

    def resize(self, max_bytes: int) -> None:
        self.max_bytes = int(max_bytes)
        self._evict()

    def _evict(self) -> None:
        while self.bytes > self.max_bytes:
            _, old = self._items.popitem(last=False)
            self.bytes -= old.nbytes

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
