"""Likely-PII detectors. Cheap substring pre-checks keep regexes off text that can't match."""

from __future__ import annotations

import re
from collections.abc import Iterator

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Known secret formats: OpenAI, AWS access key id, GitHub, Slack, Google API key, private keys.
_API_KEY = re.compile(
    r"\b(?:sk-(?:proj-|svcacct-|ant-)?[A-Za-z0-9_-]{20,}"
    r"|AKIA[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{36,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AIza[0-9A-Za-z_-]{35})"
    r"|-----BEGIN (?:RSA |EC |OPENSSH )?PRIVATE KEY-----"
)
_API_KEY_MARKERS = ("sk-", "AKIA", "gh", "xox", "AIza", "PRIVATE KEY")
# A run of digits with common separators; classified as card or phone afterwards.
_DIGIT_RUN = re.compile(r"(?<![\w.])\+?\(?\d[\d ().-]{7,22}\d(?![\w.])")
_NON_DIGITS = re.compile(r"\D")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _looks_like_phone(candidate: str, digits: str) -> bool:
    if not 10 <= len(digits) <= 15:
        return False
    # Bare digit strings are usually ids or amounts; phones are written with a + or separators.
    return candidate.startswith("+") or any(sep in candidate for sep in " -.()")


def find_pii(text: str) -> Iterator[tuple[str, str]]:
    """Yields (code, redacted match) for each kind found; at most one hit per kind."""
    if "@" in text:
        match = _EMAIL.search(text)
        if match:
            yield "pii_email", _redact(match.group())
    if any(marker in text for marker in _API_KEY_MARKERS):
        match = _API_KEY.search(text)
        if match:
            yield "pii_api_key", _redact(match.group())
    found_card = found_phone = False
    for match in _DIGIT_RUN.finditer(text):
        candidate = match.group()
        digits = _NON_DIGITS.sub("", candidate)
        if not found_card and 13 <= len(digits) <= 19 and luhn_valid(digits):
            found_card = True
            yield "pii_card_number", _redact(candidate)
        elif not found_phone and _looks_like_phone(candidate, digits):
            found_phone = True
            yield "pii_phone", _redact(candidate)
        if found_card and found_phone:
            break


def _redact(value: str) -> str:
    # Findings end up in stored reports; never echo a full secret or number back.
    if len(value) <= 6:
        return "*" * len(value)
    return value[:3] + "*" * (len(value) - 5) + value[-2:]
