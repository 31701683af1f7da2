"""Template evals: their criteria validate, and their per-run metrics come out right."""

from __future__ import annotations

from typing import Any

import pytest

from service.evals import graders, templates
from service.evals.items import CHAT_ITEM_SCHEMA
from service.evals.models import Eval, EvalOutputItem


def _eval(name: str, labels: list[str] | None = None) -> Eval:
    return Eval(
        id="eval_x",
        team_id="team_x",
        data_source_config={"type": "custom", "item_schema": CHAT_ITEM_SCHEMA},
        testing_criteria=templates.criteria_for(name, labels or [], "judge"),
        template={"name": name, "labels": labels},
    )


def _row(output: str, ideal: str, results: list[dict[str, Any]] | None = None) -> EvalOutputItem:
    return EvalOutputItem(
        id="outputitem_x",
        run_id="evalrun_x",
        eval_id="eval_x",
        team_id="team_x",
        datasource_item_id=0,
        datasource_item={"input": "q", "ideal": ideal, "messages": []},
        status="pass",
        results=results or [],
        sample={"output": [{"role": "assistant", "content": output}]},
    )


@pytest.mark.parametrize("name", templates.TEMPLATES)
def test_every_templates_criteria_are_valid_graders(name: str) -> None:
    for index, spec in enumerate(templates.criteria_for(name, ["a", "b"], "judge")):
        graders.validate(spec, f"testing_criteria[{index}]", item_schema=CHAT_ITEM_SCHEMA)


def test_question_answering_metrics() -> None:
    rows = [_row("The Pacific Ocean", "pacific ocean"), _row("the cat sat", "cat sat on the mat")]
    metrics = templates.run_metrics(_eval("question_answering"), rows)
    assert metrics == {"exact_match": 0.5, "token_f1": pytest.approx((1 + 2 / 3) / 2, abs=1e-6)}


def test_translation_metrics_are_sacrebleus_corpus_scores() -> None:
    rows = [_row("The dog bit the man.", "The dog bit the man.")]
    metrics = templates.run_metrics(_eval("translation"), rows)
    assert metrics == {"corpus_bleu": 100.0, "corpus_chrf": 100.0}


def test_dialogue_counts_consistent_wins_and_losses() -> None:
    def judged(first: str, second: str) -> list[dict[str, Any]]:
        return [
            {"name": "pairwise_model_first", "sample": {"label": first}},
            {"name": "pairwise_model_second", "sample": {"label": second}},
        ]

    rows = [
        _row("x", "y", judged("A", "B")),  # the model wins in both orders
        _row("x", "y", judged("B", "A")),  # loses in both
        _row("x", "y", judged("A", "A")),  # position bias: inconsistent
    ]
    metrics = templates.run_metrics(_eval("dialogue"), rows)
    assert metrics == {
        "pairwise": {"win": 1, "loss": 1, "tie_or_inconsistent": 1},
        "win_rate": pytest.approx(1 / 3, abs=1e-6),
    }
