"""The word-cached counter must count exactly what the tokenizer counts, whatever the text:
spaces after whitespace, unicode whitespace, contractions, marks, lone surrogates."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.files.validation.tokens import CachedCounter, _bindings_module

# Characters chosen around the pre-tokenizer's rules: every whitespace kind (ASCII, NEL,
# NBSP, en quad, ideographic space, and \x1c which Python but not the tokenizer calls
# whitespace), letters of each case, marks, digits, apostrophes, punctuation, CJK, emoji.
ALPHABET = list(
    " \t\n\r\x0b\x0c\x1c\x85\xa0\u2000\u2028\u3000\u200b"
    "'sStTdDlLmMrRvVeE aZ09é\u0301ü東京🙂✓—“”.,!?-_/\\\"{}<|>"
)
PIECES = ["'s", "'LL", "\r\n", "  ", " \n ", "<|endoftext|>", "\ud800", "https://x.io/a b"]
texts = st.lists(st.sampled_from(ALPHABET + PIECES), max_size=40).map("".join) | st.text(
    max_size=60
)


def _backend_count(backend: object, text: str) -> int:
    try:
        return backend.count(text)  # type: ignore[attr-defined]
    except UnicodeEncodeError:
        return backend.count(text.encode("utf-8", "replace").decode("utf-8"))  # type: ignore[attr-defined]


COUNTERS = {name: CachedCounter(name) for name in ("o200k_base", "cl100k_base")}
BACKENDS = {name: _bindings_module().tokenizer_for_encoding(name) for name in COUNTERS}


@settings(max_examples=1500, deadline=None)
@given(texts, st.sampled_from(sorted(COUNTERS)))
def test_word_counts_equal_the_tokenizer(text: str, encoding: str) -> None:
    counter = COUNTERS[encoding]
    expected = _backend_count(BACKENDS[encoding], text)
    assert counter.count_uncached(text) == expected
    assert counter.count(text) == expected
    # Twice: the second time every word comes from the cache.
    assert counter.count_uncached(text) == expected


def test_cache_starts_over_past_its_bound(monkeypatch) -> None:
    from service.files.validation import tokens

    monkeypatch.setattr(tokens, "WORD_CACHE_ENTRIES", 8)
    counter = CachedCounter("o200k_base")
    text = " ".join(f"w{i}" for i in range(100))
    assert counter.count_uncached(text) == BACKENDS["o200k_base"].count(text)
    assert len(counter._spaced_words) <= 8


@settings(max_examples=400, deadline=None)
@given(st.lists(texts, max_size=12), st.sampled_from(sorted(COUNTERS)))
def test_batch_counts_equal_the_tokenizer(batch: list[str], encoding: str) -> None:
    counter = COUNTERS[encoding]
    expected = [_backend_count(BACKENDS[encoding], text) for text in batch]
    assert counter.count_many(batch).tolist() == expected
    assert counter.count_many(batch).tolist() == expected  # now from the table


def test_batch_counts_past_the_table_and_in_several_passes(monkeypatch) -> None:
    from service.files.validation import batch_count

    # A tiny table (words fight over slots) and tiny passes (a batch split in many).
    monkeypatch.setattr(batch_count, "TABLE_SLOTS", 4)
    monkeypatch.setattr(batch_count, "_BATCH_BYTES", 50)
    counter = CachedCounter("o200k_base")
    batch = [" ".join(f"w{i * j} x{j}" for j in range(30)) for i in range(40)]
    batch += ["", "a  b", "\u3000 c", "longer-than-sixteen-bytes-word and", "\ud800 x"]
    expected = [_backend_count(BACKENDS["o200k_base"], text) for text in batch]
    assert counter.count_many(batch).tolist() == expected
