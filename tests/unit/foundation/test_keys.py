from __future__ import annotations

from service.tenants import keys


def test_generated_keys_are_typed_checksummed_and_unique() -> None:
    generated = {keys.generate_key() for _ in range(200)}
    assert len(generated) == 200
    for token in generated:
        assert token.startswith("ftq_sk_")
        assert keys.looks_like_key(token)


def test_a_single_changed_character_fails_the_checksum() -> None:
    token = keys.generate_key()
    position = len(keys.KEY_PREFIX) + 5
    flipped = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
    assert not keys.looks_like_key(flipped)
    assert not keys.looks_like_key(token[:-1])
    assert not keys.looks_like_key("sk-" + token[3:])


def test_hash_is_keyed_and_display_prefix_reveals_little() -> None:
    token = keys.generate_key()
    assert keys.hash_key(token, "a") != keys.hash_key(token, "b")
    assert keys.hash_key(token, "a") == keys.hash_key(token, "a")
    assert token not in keys.hash_key(token, "a")
    assert keys.display_prefix(token) == token[: len(keys.KEY_PREFIX) + 6]
