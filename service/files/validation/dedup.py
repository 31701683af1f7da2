"""Duplicate detection in fixed memory: 8-byte hashes in an open-addressing table.

Memory is ``capacity * 12`` bytes per table whatever the file size. Once the table is 75 %
full, new hashes are still looked up but no longer stored, and the caller reports that
duplicate detection became partial.
"""

from __future__ import annotations

import hashlib
from array import array
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# Bytes dropped before hashing for near duplicates: ASCII punctuation and whitespace.
_IGNORED_BYTES = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~ \t\n\r\x0b\x0c"
_MASK64 = (1 << 64) - 1
_MAX_LOAD = 0.75
_GOLDEN = 0x9E3779B97F4A7C15  # the slot hash's multiplier (Fibonacci hashing)


def hash64(data: bytes) -> int:
    # blake2b is stable across processes, unlike hash(), which is salted per interpreter.
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") or 1


# bytes.lower() as a translation table, so lowering and dropping happen in one C pass.
_ASCII_LOWER = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", b"abcdefghijklmnopqrstuvwxyz")


def normalize_for_near_duplicates(encoded: bytes) -> bytes:
    """ASCII case, punctuation and whitespace don't matter; works on UTF-8 bytes because
    bytes.translate is a single C pass (str.translate with a dict is ~50x slower)."""
    return encoded.translate(_ASCII_LOWER, _IGNORED_BYTES)


DIGEST_BYTES = 8
_NO_DIGEST = bytes(DIGEST_BYTES)
_ONE = (1).to_bytes(DIGEST_BYTES, "little")


def digest(data: bytes) -> bytes:
    """hash64's 8 bytes (little-endian), before the int: zero is mapped to one by the reader."""
    return hashlib.blake2b(data, digest_size=DIGEST_BYTES).digest()


def near_digest(encoded: bytes, min_chars: int) -> bytes:
    """near_hash as 8 little-endian bytes (zero bytes when the text is too short)."""
    normalized = encoded.translate(_ASCII_LOWER, _IGNORED_BYTES)
    if len(normalized) < min_chars:
        return _NO_DIGEST
    found = hashlib.blake2b(normalized, digest_size=DIGEST_BYTES).digest()
    return found if found != _NO_DIGEST else _ONE


def near_hash(encoded: bytes, min_chars: int) -> int:
    """0 when the normalized text is too short to call two examples near duplicates."""
    normalized = normalize_for_near_duplicates(encoded)
    if len(normalized) < min_chars:
        return 0
    return hash64(normalized)


class HashIndex:
    """hash -> first line number, in two flat arrays (no per-entry Python objects)."""

    def __init__(self, capacity: int) -> None:
        size = 1
        while size < capacity:
            size <<= 1
        self._mask = size - 1
        self._keys = array("Q", bytes(8 * size))
        self._lines = array("I", bytes(4 * size))
        self._limit = int(size * _MAX_LOAD)
        self.size = 0
        self.saturated = False

    def _slot(self, key: int) -> int:
        keys, mask = self._keys, self._mask
        slot = (key * _GOLDEN & _MASK64) >> 20 & mask
        while True:
            stored = keys[slot]
            if stored == 0 or stored == key:
                return slot
            slot = (slot + 1) & mask

    def get(self, key: int) -> int | None:
        slot = self._slot(key)
        return self._lines[slot] if self._keys[slot] == key else None

    def add_or_get(self, key: int, line: int) -> int | None:
        """Returns the first line seen with ``key``, or records ``line`` and returns None."""
        slot = self._slot(key)
        if self._keys[slot] == key:
            return self._lines[slot]
        if self.size >= self._limit:
            self.saturated = True
            return None
        self._keys[slot] = key
        self._lines[slot] = min(line, 0xFFFFFFFF)
        self.size += 1
        return None

    def add_fresh(self, keys: np.ndarray, lines: np.ndarray, eligible: np.ndarray) -> np.ndarray:
        """Records at once every eligible key that is new for sure, and returns their mask;
        the caller passes the rest to ``add_or_get``, in line order.

        New for sure: its home slot is empty (with linear probing, a key whose home slot is
        empty is absent), it occurs once in ``keys`` (the whole batch, eligible or not, so
        no other line of the batch can claim to be first), and no other such key has the
        same home slot. Inserting into empty slots never breaks another key's probe chain,
        so the keys left to ``add_or_get`` are found, or placed, exactly as before."""
        import numpy as np

        fresh = np.zeros(len(keys), dtype=bool)
        if not len(keys) or self.size + int(eligible.sum()) > self._limit:
            return fresh  # near the load limit: the exact path keeps the saturation rule
        table = np.frombuffer(self._keys, dtype=np.uint64)
        slots = ((keys * np.uint64(_GOLDEN)) >> np.uint64(20) & np.uint64(self._mask)).astype(
            np.intp
        )
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        candidate = eligible & (counts[inverse] == 1) & (table[slots] == 0)
        if candidate.any():
            chosen = np.flatnonzero(candidate)
            _, slot_inverse, slot_counts = np.unique(
                slots[chosen], return_inverse=True, return_counts=True
            )
            chosen = chosen[slot_counts[slot_inverse] == 1]
            table[slots[chosen]] = keys[chosen]
            np.frombuffer(self._lines, dtype=np.uint32)[slots[chosen]] = np.minimum(
                lines[chosen], 0xFFFFFFFF
            )
            self.size += len(chosen)
            fresh[chosen] = True
        return fresh
