"""Object ids: OpenAI-style prefixes and unbiased base62 tails."""

from __future__ import annotations

import collections
import string

from service import ids


def test_tail_has_the_length_and_alphabet_asked_for() -> None:
    for length in (1, 16, 24, 100):
        tail = ids.random_base62(length)
        assert len(tail) == length
        assert set(tail) <= set(string.ascii_letters + string.digits)
    assert ids.job_id().startswith("ftjob-") and len(ids.job_id()) == len("ftjob-") + 24


def test_every_character_is_about_equally_likely() -> None:
    # ~3,900 draws per character (sd ~62): a plain byte % 62 would draw the first 8
    # characters 5 times in 256 instead of 4 (+25 %); a missing character shows too.
    counts = collections.Counter("".join(ids.random_base62(24) for _ in range(10_000)))
    assert len(counts) == 62
    expected = 240_000 / 62
    assert all(abs(n - expected) < 0.08 * expected for n in counts.values())


def test_ids_do_not_repeat() -> None:
    assert len({ids.event_id() for _ in range(5_000)}) == 5_000
