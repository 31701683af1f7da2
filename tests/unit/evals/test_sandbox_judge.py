"""The sandbox's deterministic judge and embeddings (the stand-ins the eval tests rely on)."""

from __future__ import annotations

import json
import math

from sandbox.judge import LABEL_SCHEMA, SCORE_SCHEMA, embed, judge
from sandbox.models import GENERIC_ANSWER

LABELS = {
    "name": LABEL_SCHEMA,
    "schema": {"properties": {"label": {"enum": ["correct", "incorrect"]}}},
}
PAIRWISE = {"name": LABEL_SCHEMA, "schema": {"properties": {"label": {"enum": ["A", "B", "tie"]}}}}
SCORE = {"name": SCORE_SCHEMA}


def _label(schema: dict, prompt: str) -> str:
    return json.loads(judge(schema, prompt, ""))["label"]


def test_reference_and_answer_labels() -> None:
    assert _label(LABELS, "Reference: Paris.\nAnswer: Paris.") == "correct"
    assert _label(LABELS, f"Reference: Paris.\nAnswer: {GENERIC_ANSWER}") == "incorrect"
    assert _label(LABELS, "no markers at all") == "correct"


def test_pairwise_prefers_the_specific_answer_in_either_order() -> None:
    assert _label(PAIRWISE, f"Response A: Paris.\nResponse B: {GENERIC_ANSWER}") == "A"
    assert _label(PAIRWISE, f"Response A: {GENERIC_ANSWER}\nResponse B: Paris.") == "B"
    assert _label(PAIRWISE, "Response A: Paris.\nResponse B: Paris.") == "tie"


def test_scores_scale_with_similarity_inside_the_range() -> None:
    system = "Answer with a score from 0 to 10."
    same = json.loads(judge(SCORE, "Reference: Mount Everest.\nAnswer: Mount Everest.", system))
    other = json.loads(judge(SCORE, "Reference: Mount Everest.\nAnswer: Mercury.", system))
    assert same["result"] > other["result"] and other["result"] >= 0 and same["result"] <= 10


def test_embeddings_are_unit_vectors_equal_for_equal_text() -> None:
    first, again, other = embed("the cat sat"), embed("the cat sat"), embed("quantum flux")
    assert first == again and len(first) == 64
    assert math.isclose(sum(v * v for v in first), 1.0)
    assert sum(a * b for a, b in zip(first, other, strict=True)) < 0.99
