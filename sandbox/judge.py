"""The sandbox's judge and embeddings: deterministic stand-ins derived from the request.

Judge: a chat completion asking for a JSON ``{"label"}`` or ``{"result"}`` (a
``response_format`` json_schema, as graders send) is answered from the prompt itself.
- Two responses (``Response A: …`` / ``Response B: …`` lines): ``tie`` when they say
  about the same thing, else the one that is not the sandbox base model's generic answer
  (A when neither or both are).
- A reference and an answer (``Reference: …`` / ``Answer: …`` lines): the first label (or
  the top of the score range) when the answer matches the reference closely, else the last
  label (or a score scaled by the similarity).
- Otherwise the first label, or the middle of the range.

Embeddings: a hashed bag of words (64 dimensions, L2-normalised), so equal texts have
cosine 1 and texts sharing words score higher than texts that share none.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from sandbox.models import GENERIC_ANSWER, similarity

LABEL_SCHEMA = "ftq_label_grade"
SCORE_SCHEMA = "ftq_score_grade"
DIMENSIONS = 64
_MATCH = 0.5
_SAME = 0.6
_WORD = re.compile(r"[a-z0-9']+")


def judge_schema(body: dict[str, Any]) -> dict[str, Any] | None:
    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    schema = response_format.get("json_schema") or {}
    return schema if schema.get("name") in (LABEL_SCHEMA, SCORE_SCHEMA) else None


def _field(text: str, name: str) -> str | None:
    match = re.search(rf"^{name}:\s*(.*?)(?=^\w[\w ]*:|\Z)", text, re.MULTILINE | re.DOTALL)
    return match.group(1).strip() if match else None


def _generic(text: str) -> bool:
    return similarity(text, GENERIC_ANSWER) > 0.8


def judge(schema: dict[str, Any], prompt: str, system: str) -> str:
    first, second = _field(prompt, "Response A"), _field(prompt, "Response B")
    reference, answer = _field(prompt, "Reference"), _field(prompt, "Answer")
    if schema["name"] == LABEL_SCHEMA:
        labels = schema.get("schema", {}).get("properties", {}).get("label", {}).get("enum") or []
        labels = [str(x) for x in labels] or ["pass", "fail"]
        if first is not None and second is not None:
            if similarity(first, second) >= _SAME and "tie" in labels:
                label = "tie"
            elif _generic(first) and not _generic(second):
                label = "B" if "B" in labels else labels[-1]
            else:
                label = "A" if "A" in labels else labels[0]
        elif reference is not None and answer is not None:
            label = labels[0] if similarity(answer, reference) >= _MATCH else labels[-1]
        else:
            label = labels[0]
        return json.dumps({"label": label})
    low, high = 0.0, 1.0
    found = re.search(r"score from (-?[\d.]+) to (-?[\d.]+)", system)
    if found:
        low, high = float(found.group(1)), float(found.group(2).rstrip("."))
    if reference is not None and answer is not None:
        value = low + (high - low) * similarity(answer, reference)
    else:
        value = (low + high) / 2
    return json.dumps({"result": round(value, 4), "steps": ["compared the answer and reference"]})


def embed(text: str) -> list[float]:
    vector = [0.0] * DIMENSIONS
    for word in _WORD.findall(text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        vector[digest[0] % DIMENSIONS] += 1.0 if digest[1] % 2 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector
