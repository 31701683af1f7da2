"""Ready-made evals for the usual fine-tuning applications, filled in from a dataset.

``POST /v1/evals/templates/{name}`` (an ftq extension) reads the team's dataset file —
chat examples, prompt/completion pairs, or flat objects with ``fields`` naming the input and
reference columns — and creates an eval over items ``{input, ideal, messages}`` with the
application's usual metrics:

- ``question_answering``: exact match and token F1 (SQuAD's normalisation);
- ``classification``: accuracy (string equality with a label) and, on each run, macro-F1
  over the labels read from the dataset;
- ``translation``: chrF and BLEU per item (sacrebleu), corpus chrF and BLEU on each run;
- ``summarization``: ROUGE-L (rouge-score);
- ``dialogue``: a pairwise judge asked twice with the answers swapped (position bias
  cancels out); an item passes when the model's answer wins or ties in both orders.
"""

from __future__ import annotations

import collections
from typing import Any

from sqlmodel import Session

from service.config import get_settings
from service.errors import InvalidRequest, NotFound
from service.evals import items as item_data
from service.evals.graders import metrics
from service.evals.models import Eval, EvalOutputItem
from service.files import service as files

TEMPLATES = ("question_answering", "classification", "translation", "summarization", "dialogue")
MAX_LABELS = 100
ANSWER = "{{sample.output_text}}"
REFERENCE = "{{item.ideal}}"


def _similarity(name: str, metric: str, threshold: float) -> dict[str, Any]:
    return {
        "type": "text_similarity",
        "name": name,
        "input": ANSWER,
        "reference": REFERENCE,
        "evaluation_metric": metric,
        "pass_threshold": threshold,
    }


def _pairwise(name: str, first: str, second: str, passing: list[str], judge: str) -> dict[str, Any]:
    return {
        "type": "label_model",
        "name": name,
        "model": judge,
        "input": [
            {
                "role": "user",
                "content": "Which response answers the conversation better? Answer A, B, or tie.\n"
                "Conversation: {{item.input}}\n"
                f"Response A: {first}\n"
                f"Response B: {second}",
            }
        ],
        "labels": ["A", "B", "tie"],
        "passing_labels": passing,
    }


def criteria_for(name: str, labels: list[str], judge: str) -> list[dict[str, Any]]:
    if name == "question_answering":
        return [
            _similarity("exact_match", "exact_match", 1.0),
            _similarity("token_f1", "token_f1", 0.5),
        ]
    if name == "classification":
        return [
            {
                "type": "string_check",
                "name": "accuracy",
                "input": ANSWER,
                "reference": REFERENCE,
                "operation": "eq",
            }
        ]
    if name == "translation":
        return [_similarity("chrf", "chrf", 0.5), _similarity("bleu", "bleu", 0.3)]
    if name == "summarization":
        return [_similarity("rouge_l", "rouge_l", 0.3)]
    return [
        _pairwise("pairwise_model_first", ANSWER, REFERENCE, ["A", "tie"], judge),
        _pairwise("pairwise_model_second", REFERENCE, ANSWER, ["B", "tie"], judge),
    ]


def _fields(body: dict[str, Any]) -> dict[str, str] | None:
    fields = body.get("fields")
    if fields is None:
        return None
    if not isinstance(fields, dict) or not isinstance(fields.get("input"), str):
        raise InvalidRequest(
            'fields must name the dataset\'s columns: {"input": ..., "reference": ...}.',
            param="fields",
        )
    reference = fields.get("reference")
    if not isinstance(reference, str):
        raise InvalidRequest(
            "fields.reference must name the reference column.", param="fields.reference"
        )
    return {"input_field": fields["input"], "reference_field": reference}


DESCRIPTIONS = {
    "question_answering": ("exact_match", "token_f1"),
    "classification": ("accuracy", "macro_f1 (per run)"),
    "translation": ("chrf", "bleu", "corpus chrF and BLEU (per run)"),
    "summarization": ("rouge_l",),
    "dialogue": ("pairwise_model_first", "pairwise_model_second", "win_rate (per run)"),
}


def describe(name: str) -> dict[str, Any]:
    return {"object": "eval.template", "id": name, "metrics": list(DESCRIPTIONS[name])}


def build(session: Session, team_id: str, name: Any, body: dict[str, Any]) -> dict[str, Any]:
    """The create-eval body (and template record) for template ``name`` over the body's file."""
    if name not in TEMPLATES:
        raise InvalidRequest(
            f"template must be one of: {', '.join(TEMPLATES)}.",
            param="template",
            code="template_not_found",
        )
    file_id = body.get("file_id")
    if not isinstance(file_id, str):
        raise InvalidRequest("file_id is required: the dataset to read.", param="file_id")
    try:
        record = files.get_file(session, team_id, file_id)
    except NotFound:
        raise InvalidRequest(
            f"invalid file id: {file_id}", param="file_id", code="file_not_found"
        ) from None
    mapping = _fields(body)
    limit = get_settings().evals.max_items
    lines = list(item_data.read_lines(files.file_path(record), param="file_id", limit=limit))
    if not lines:
        raise InvalidRequest("The dataset is empty.", param="file_id")
    converted = []
    for number, line in enumerate(lines, start=1):
        if mapping:
            for key, param in (
                (mapping["input_field"], "fields.input"),
                (mapping["reference_field"], "fields.reference"),
            ):
                if key not in line:
                    raise InvalidRequest(
                        f"Line {number} of {file_id} has no field '{key}' (named by {param}); "
                        f"its fields are: {', '.join(sorted(line)) or 'none'}.",
                        param=param,
                        code="field_not_found",
                    )
        item, _ = item_data.to_item(line, mapping)
        missing = [f for f in item_data.CHAT_ITEM_FIELDS if f not in item]
        if missing:
            raise InvalidRequest(
                f"Line {number} of {file_id} is neither a chat example nor a prompt/completion "
                'pair; name its input and reference columns with fields: {"input": ..., '
                '"reference": ...}.',
                param="fields",
                code="field_not_found",
            )
        converted.append(item)
    labels: list[str] = []
    if name == "classification":
        labels = sorted({str(item["ideal"]).strip() for item in converted})
        if len(labels) > MAX_LABELS:
            raise InvalidRequest(
                f"The dataset has {len(labels)} distinct answers; classification takes at most "
                f"{MAX_LABELS} labels.",
                param="file_id",
            )
    judge = body.get("judge_model") or get_settings().evals.judge_model
    if not isinstance(judge, str):
        raise InvalidRequest("judge_model must name a model.", param="judge_model")
    template = {"name": name, "file_id": file_id, "labels": labels or None, "fields": mapping}
    eval_body = {
        "name": body.get("name") or f"{name} ({record.filename})",
        "metadata": body.get("metadata"),
        "data_source_config": {
            "type": "custom",
            "item_schema": item_data.CHAT_ITEM_SCHEMA,
            "include_sample_schema": True,
        },
        "testing_criteria": criteria_for(name, labels, judge),
    }
    return {"body": eval_body, "template": template}


def run_metrics(record: Eval, rows: list[EvalOutputItem]) -> dict[str, Any] | None:
    """Corpus-level figures of a finished run of a template eval."""
    template = (record.template or {}).get("name")
    graded = [r for r in rows if r.status != "error" and r.sample and r.sample.get("output")]
    if not template or not graded:
        return None
    outputs = [str((r.sample or {})["output"][0].get("content") or "") for r in graded]
    references = [str(r.datasource_item.get("ideal", "")) for r in graded]
    if template == "classification":
        labels = list((record.template or {}).get("labels") or sorted(set(references)))
        predictions = [o.strip() for o in outputs]
        gold = [g.strip() for g in references]
        return {
            "accuracy": round(
                sum(p == g for p, g in zip(predictions, gold, strict=True)) / len(gold), 6
            ),
            "macro_f1": round(metrics.macro_f1(predictions, gold, labels), 6),
            "labels": labels,
        }
    if template == "translation":
        return {
            "corpus_bleu": round(metrics.corpus_bleu(outputs, references), 4),
            "corpus_chrf": round(metrics.corpus_chrf(outputs, references), 4),
        }
    if template == "question_answering":
        n = len(graded)
        return {
            "exact_match": round(
                sum(metrics.exact_match(o, g) for o, g in zip(outputs, references, strict=True))
                / n,
                6,
            ),
            "token_f1": round(
                sum(metrics.token_f1(o, g) for o, g in zip(outputs, references, strict=True)) / n, 6
            ),
        }
    if template == "summarization":
        n = len(graded)
        return {
            "rouge_l": round(
                sum(
                    metrics.rouge("rouge_l", o, g) for o, g in zip(outputs, references, strict=True)
                )
                / n,
                6,
            )
        }
    if template == "dialogue":
        outcomes: collections.Counter[str] = collections.Counter()
        for row in graded:
            labels_seen = {r["name"]: (r.get("sample") or {}).get("label") for r in row.results}
            first, second = (
                labels_seen.get("pairwise_model_first"),
                labels_seen.get("pairwise_model_second"),
            )
            if first == "A" and second == "B":
                outcomes["win"] += 1
            elif first == "B" and second == "A":
                outcomes["loss"] += 1
            else:
                outcomes["tie_or_inconsistent"] += 1
        return {"pairwise": dict(outcomes), "win_rate": round(outcomes["win"] / len(graded), 6)}
    return None
