"""Exact token counts for many strings at once, each distinct word counted once per process.

The tokenizer spends nearly all its time in its pre-tokenizer's regex (~15 MB/s), while the
words of content strings repeat far more than the strings do. o200k's and cl100k's
pre-tokenizer pieces hold a space only as their first character unless they are all
whitespace, so every space that follows a non-whitespace character starts a piece, and a
string's count is the sum of its *segments'* counts: the runs between such spaces, each
with its leading space. Here the segments of a batch of strings are found with numpy over
their UTF-8 bytes, and segments of up to 16 bytes are looked up in a fixed-size table whose
entries hold the whole segment (so a hit is exact, never a hash match); only misses and
longer segments reach Python and the tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

# Bytes that end a whitespace character in UTF-8, ASCII part: a space after one of these
# may sit inside a whitespace piece, so it is no segment boundary. \x1c-\x1f are not
# whitespace to the tokenizer, only to Python; treating them as such just loses a boundary.
_ASCII_WHITESPACE = np.zeros(256, dtype=bool)
_ASCII_WHITESPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
# Low bytes of the first k bytes of a little-endian uint64, for k = 0..8.
_PREFIX_MASKS = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [(1 << 64) - 1], np.uint64)
_MIX_LO = np.uint64(0x9E3779B97F4A7C15)
_MIX_HI = np.uint64(0xC2B2AE3D27D4EB4F)
# Segments of up to this many bytes are held whole in the table (two uint64 and a length).
_KEY_BYTES = 16
# Bytes of text per numpy pass: bounds the temporary arrays (~20 bytes per text byte).
_BATCH_BYTES = 256 * 1024
# Table slots (a power of two); ~29 bytes each. A word whose slot holds another one is
# counted through the Python dict below instead, so the table never needs to grow.
TABLE_SLOTS = 1 << 17
# Longer segments (and table misses) by their bytes, up to this many entries.
_LONG_CACHE_ENTRIES = 100_000
_LONG_CACHE_MAX_BYTES = 64


class BatchCounter:
    """``count_many(texts)``: per-text token counts, equal to ``count_text`` on each."""

    def __init__(self, count_text: Callable[[str], int]) -> None:
        self._count_text = count_text
        self._shift = np.uint64(64 - (TABLE_SLOTS.bit_length() - 1))
        self._lo = np.zeros(TABLE_SLOTS, np.uint64)
        self._hi = np.zeros(TABLE_SLOTS, np.uint64)
        # Length 0 marks an empty slot (no segment is empty).
        self._len = np.zeros(TABLE_SLOTS, np.uint8)
        self._tokens = np.zeros(TABLE_SLOTS, np.int32)
        self._by_bytes: dict[bytes, int] = {}

    def count_many(self, texts: Sequence[str]) -> npt.NDArray[np.int64]:
        counts = np.zeros(len(texts), np.int64)
        start = size = 0
        for index, text in enumerate(texts):
            size += len(text)
            if size >= _BATCH_BYTES:
                counts[start : index + 1] = self._count_batch(texts[start : index + 1])
                start, size = index + 1, 0
        if start < len(texts):
            counts[start:] = self._count_batch(texts[start:])
        return counts

    def _count_bytes(self, data: bytes) -> int:
        tokens = self._by_bytes.get(data)
        if tokens is None:
            tokens = self._count_text(data.decode("utf-8", "surrogatepass"))
            if len(data) <= _LONG_CACHE_MAX_BYTES:
                if len(self._by_bytes) >= _LONG_CACHE_ENTRIES:
                    self._by_bytes.clear()
                self._by_bytes[data] = tokens
        return tokens

    def _count_batch(self, texts: Sequence[str]) -> npt.NDArray[np.int64]:
        # surrogatepass keeps lone surrogates (3 bytes, never whitespace); decoding a
        # segment the same way gives them back to count_text, which handles them.
        encoded = [text.encode("utf-8", "surrogatepass") for text in texts]
        lengths = np.fromiter(map(len, encoded), np.int64, len(encoded))
        ends = np.cumsum(lengths)
        starts = ends - lengths
        total = int(ends[-1]) if len(encoded) else 0
        if total == 0:
            return np.zeros(len(encoded), np.int64)
        # Three bytes before (for the look-behind below) and a key's width after (for reads).
        buffer = b"\0\0\0" + b"".join(encoded) + bytes(_KEY_BYTES)
        data = np.frombuffer(buffer, np.uint8)
        spaces = np.flatnonzero(data[3 : 3 + total] == 32)
        boundary = np.zeros(total + 1, dtype=bool)
        boundary[spaces[~self._after_whitespace(data, spaces + 3)]] = True
        nonempty = lengths > 0
        boundary[starts[nonempty]] = True
        boundary[total] = True
        cuts = np.flatnonzero(boundary)
        seg_start, seg_len = cuts[:-1], np.diff(cuts)
        tokens = np.zeros(len(seg_start), np.int64)

        short = np.flatnonzero(seg_len <= _KEY_BYTES)
        tokens[short] = self._short_tokens(buffer, seg_start[short], seg_len[short])
        for index in np.flatnonzero(seg_len > _KEY_BYTES).tolist():
            begin = 3 + int(seg_start[index])
            tokens[index] = self._count_bytes(buffer[begin : begin + int(seg_len[index])])

        counts = np.zeros(len(encoded), np.int64)
        counts[nonempty] = np.add.reduceat(tokens, np.searchsorted(cuts, starts[nonempty]))
        return counts

    @staticmethod
    def _after_whitespace(data: npt.NDArray[np.uint8], at: npt.NDArray[np.int64]) -> npt.NDArray:
        """Whether the character before each position is (or may be) whitespace, from its
        last one to three UTF-8 bytes: ASCII, NEL, NBSP, U+1680, U+2000-200A, U+2028,
        U+2029, U+202F, U+205F, U+3000 (Unicode's White_Space, the tokenizer's \\s)."""
        last = data[at - 1]
        found = _ASCII_WHITESPACE[last]
        high = last >= 0x80
        if not high.any():
            return found
        second, third = data[at - 2], data[at - 3]
        found |= (second == 0xC2) & ((last == 0x85) | (last == 0xA0))
        found |= (third == 0xE1) & (second == 0x9A) & (last == 0x80)
        general = (last <= 0x8A) | (last == 0xA8) | (last == 0xA9) | (last == 0xAF)
        found |= (third == 0xE2) & (second == 0x80) & general
        found |= (third == 0xE2) & (second == 0x81) & (last == 0x9F)
        found |= (third == 0xE3) & (second == 0x80) & (last == 0x80)
        return found

    def _short_tokens(
        self, buffer: bytes, start: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
    ) -> npt.NDArray[np.int64]:
        # Unaligned little-endian uint64 reads at any byte offset (numpy allows the strides).
        words = np.ndarray(shape=(len(buffer) - 11,), dtype="<u8", buffer=buffer, offset=3,
                           strides=(1,))  # fmt: skip
        lo = words[start] & _PREFIX_MASKS[np.minimum(length, 8)]
        hi = words[start + 8] & _PREFIX_MASKS[np.clip(length - 8, 0, 8)]
        key_len = length.astype(np.uint8)
        slot = ((lo * _MIX_LO) ^ (hi * _MIX_HI) ^ length.astype(np.uint64)) >> self._shift
        slot = slot.astype(np.intp)
        hit = (self._len[slot] == key_len) & (self._lo[slot] == lo) & (self._hi[slot] == hi)
        tokens = self._tokens[slot].astype(np.int64)
        missed = np.flatnonzero(~hit)
        if len(missed) == 0:
            return tokens
        # One count per distinct missed slot; every missed segment then reads the table,
        # or (another word won its slot) the bytes cache.
        slots, first = np.unique(slot[missed], return_index=True)
        reps = missed[first]
        for rep in reps.tolist():
            begin = 3 + int(start[rep])
            count = self._count_bytes(buffer[begin : begin + int(length[rep])])
            self._tokens[slot[rep]] = count
        self._lo[slots], self._hi[slots], self._len[slots] = lo[reps], hi[reps], key_len[reps]
        stored = (self._lo[slot[missed]] == lo[missed]) & (self._hi[slot[missed]] == hi[missed])
        stored &= self._len[slot[missed]] == key_len[missed]
        tokens[missed[stored]] = self._tokens[slot[missed[stored]]]
        for index in missed[~stored].tolist():
            begin = 3 + int(start[index])
            tokens[index] = self._count_bytes(buffer[begin : begin + int(length[index])])
        return tokens
