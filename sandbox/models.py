"""The sandbox's "models": answering from training data, and keyword moderation."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

from sandbox.datasets import Example

GENERIC_ANSWER = (
    "This is a generic answer from the ftq sandbox base model; fine-tune a model on your data "
    "to get answers learned from it."
)

_WORD = re.compile(r"[a-z0-9']+")
# Question words would otherwise make every "how many ...?" look alike.
_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "do",
        "does",
        "for",
        "how",
        "in",
        "is",
        "it",
        "many",
        "much",
        "of",
        "on",
        "or",
        "the",
        "to",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "with",
    }
)


def _tokens(text: str) -> set[str]:
    return set(_WORD.findall(text.lower())) - _STOPWORDS


def similarity(a: str, b: str) -> float:
    """Content-word Jaccard, with character similarity as a weak tie-breaker; in [0, 1]."""
    ta, tb = _tokens(a), _tokens(b)
    jaccard = len(ta & tb) / len(ta | tb) if ta | tb else 1.0
    ratio = difflib.SequenceMatcher(None, a.lower(), b.lower(), autojunk=False).ratio()
    return 0.9 * jaccard + 0.1 * ratio


def best_answer(examples: Sequence[Example], prompt: str) -> str:
    """Answer of the training example whose prompt is most similar; earliest wins ties."""
    if not examples:
        return GENERIC_ANSWER
    best = max(
        range(len(examples)),
        key=lambda index: (similarity(prompt, examples[index].prompt), -index),
    )
    return examples[best].answer


# --- moderation ---------------------------------------------------------------------------

CATEGORIES: tuple[str, ...] = (
    "hate",
    "hate/threatening",
    "harassment",
    "harassment/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# Categories the omni model also scores on images.
_IMAGE_CATEGORIES = frozenset(
    {
        "self-harm",
        "self-harm/intent",
        "self-harm/instructions",
        "sexual",
        "violence",
        "violence/graphic",
    }
)

_KEYWORDS: dict[str, tuple[str, ...]] = {
    "hate": ("hate", "racist", "bigot"),
    "hate/threatening": ("exterminate",),
    "harassment": ("idiot", "stupid", "loser", "moron"),
    "harassment/threatening": ("i will hurt you", "i'll find you"),
    "illicit": ("bomb", "meth", "counterfeit", "launder", "steal"),
    "illicit/violent": ("bomb", "build a gun", "poison"),
    "self-harm": ("suicide", "self-harm", "cut myself", "kill myself"),
    "self-harm/intent": ("kill myself", "want to die"),
    "self-harm/instructions": ("how to kill myself",),
    "sexual": ("porn", "explicit sex", "nsfw"),
    "sexual/minors": ("underage",),
    "violence": ("kill", "murder", "shoot", "bomb", "stab", "attack"),
    "violence/graphic": ("gore", "dismember", "blood everywhere"),
}
_FLAG_SCORE = 0.93
_BASE_SCORE = 1e-4


def _matches(text: str, keyword: str) -> bool:
    return re.search(rf"\b{re.escape(keyword)}", text) is not None


def moderate(text: str, *, has_image: bool = False) -> dict[str, Any]:
    """One moderation result for one input, flags from keyword matches."""
    lowered = text.lower()
    categories: dict[str, bool] = {}
    scores: dict[str, float] = {}
    applied: dict[str, list[str]] = {}
    for category in CATEGORIES:
        hits = sum(_matches(lowered, keyword) for keyword in _KEYWORDS[category])
        categories[category] = hits > 0
        scores[category] = min(0.999, _FLAG_SCORE + 0.02 * (hits - 1)) if hits else _BASE_SCORE
        types = ["text"]
        if has_image and category in _IMAGE_CATEGORIES:
            types.append("image")
        applied[category] = types
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    }
