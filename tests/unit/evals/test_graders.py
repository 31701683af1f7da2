"""Graders against known values: each metric pinned to its library's own reference example
(README or docstring), string checks and formulas by hand, refusals as precise 400s."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from service.errors import InvalidRequest
from service.evals import graders
from service.evals.gate import bootstrap_ci
from service.evals.graders import formula, metrics
from service.evals.templating import TemplateError, check_against_schema, render, resolve


def _grade(spec: dict[str, Any], output: str, item: dict[str, Any] | None = None) -> Any:
    return graders.grade(spec, item or {}, {"output_text": output}, None)


# --- library reference examples ------------------------------------------------------------


def test_bleu_and_chrf_match_sacrebleus_readme() -> None:
    # sacrebleu README: "BLEU = 48.53 82.4/50.0/45.5/37.5 ..." and "chrF2 = 59.73".
    refs = [
        ["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
        ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."],
    ]
    outputs = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    assert metrics.corpus_bleu(outputs, refs) == pytest.approx(48.53, abs=0.005)
    assert metrics.corpus_chrf(outputs, refs) == pytest.approx(59.73, abs=0.005)
    assert metrics.bleu("The dog bit the man.", "The dog bit the man.") == pytest.approx(1.0)


def test_rouge_matches_rouge_score_readme() -> None:
    # rouge-score README: score('The quick brown fox jumps over the lazy dog',
    # 'The quick brown dog jumps on the log.') -> rouge1 F 0.7058823529411765, rougeL F 0.5882…
    target, prediction = (
        "The quick brown fox jumps over the lazy dog",
        "The quick brown dog jumps on the log.",
    )
    assert metrics.rouge("rouge_1", prediction, target) == pytest.approx(0.7058823529411765)
    assert metrics.rouge("rouge_l", prediction, target) == pytest.approx(0.5882352941176471)
    assert metrics.rouge("rouge_5", prediction, target) == 0.0


def test_gleu_matches_nltk_docstring() -> None:
    ref = "the cat is on the mat"
    assert metrics.gleu("the the the the the the the", ref) == pytest.approx(0.0909, abs=1e-4)
    ref1 = "It is a guide to action that ensures that the military will forever heed Party commands"
    hyp1 = (
        "It is a guide to action which ensures that the military always obeys the commands of "
        "the party"
    )
    hyp2 = "It is to insure the troops forever hearing the activity guidebook that party direct"
    assert metrics.gleu(hyp1, ref1) == pytest.approx(0.4393, abs=1e-4)
    assert metrics.gleu(hyp2, ref1) == pytest.approx(0.1206, abs=1e-4)


def test_fuzzy_match_matches_rapidfuzz_readme() -> None:
    # rapidfuzz README: fuzz.ratio("this is a test", "this is a test!") -> 96.55172413793103
    assert metrics.fuzzy_match("this is a test", "this is a test!") == pytest.approx(
        0.9655172413793103
    )


def test_squad_exact_match_and_token_f1() -> None:
    assert metrics.exact_match("The Pacific Ocean.", "pacific ocean") == 1.0
    assert metrics.exact_match("Atlantic", "pacific ocean") == 0.0
    # pred [cat, sat] vs gold [cat, sat, on, mat]: P=1, R=0.5 -> F1 = 2/3
    assert metrics.token_f1("the cat sat", "cat sat on the mat") == pytest.approx(2 / 3)
    assert metrics.token_f1("dog", "cat") == 0.0


def test_macro_f1_matches_sklearns_documented_example() -> None:
    # sklearn f1_score docs: y_true=[0,1,2,0,1,2], y_pred=[0,2,1,0,0,1], macro -> 0.2666…
    truth = ["0", "1", "2", "0", "1", "2"]
    predicted = ["0", "2", "1", "0", "0", "1"]
    assert metrics.macro_f1(predicted, truth, ["0", "1", "2"]) == pytest.approx(0.26666666666666666)


# --- graders ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation", "output", "reference", "passed"),
    [
        ("eq", "Paris", "Paris", True),
        ("eq", "Paris.", "Paris", False),
        ("ne", "Paris", "Lyon", True),
        ("like", "It is Paris.", "Paris", True),
        ("like", "It is paris.", "Paris", False),
        ("ilike", "It is paris.", "Paris", True),
    ],
)
def test_string_check(operation: str, output: str, reference: str, passed: bool) -> None:
    spec = {
        "type": "string_check",
        "name": "s",
        "input": "{{sample.output_text}}",
        "reference": "{{item.answer}}",
        "operation": operation,
    }
    result = _grade(graders.validate(spec, "g"), output, {"answer": reference})
    assert (result.passed, result.score) == (passed, 1.0 if passed else 0.0)


def test_text_similarity_uses_pass_threshold() -> None:
    spec = {
        "type": "text_similarity",
        "name": "t",
        "input": "{{sample.output_text}}",
        "reference": "this is a test",
        "evaluation_metric": "fuzzy_match",
        "pass_threshold": 0.9,
    }
    result = _grade(graders.validate(spec, "g"), "this is a test!")
    assert result.passed and result.score == pytest.approx(0.9655172413793103)
    assert not _grade({**spec, "pass_threshold": 0.99}, "this is a test!").passed


def test_multi_grader_formula() -> None:
    spec = graders.validate(
        {
            "type": "multi",
            "name": "m",
            "graders": {
                "exact": {
                    "type": "string_check",
                    "name": "exact",
                    "input": "{{sample.output_text}}",
                    "reference": "Paris",
                    "operation": "eq",
                },
                "fuzzy": {
                    "type": "text_similarity",
                    "name": "fuzzy",
                    "input": "{{sample.output_text}}",
                    "reference": "Paris",
                    "evaluation_metric": "fuzzy_match",
                },
            },
            "calculate_output": "0.5 * exact + 0.5 * max(fuzzy, 0)",
        },
        "g",
        in_eval=False,
    )
    result = _grade(spec, "Paris")
    assert result.score == pytest.approx(1.0) and result.sub_scores == {"exact": 1.0, "fuzzy": 1.0}
    assert _grade(spec, "Lyon").score < 0.5


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('true')", "a.__class__", "[1][0]", "open('x')", "lambda: 1", "'s'"],
)
def test_formula_refuses_anything_but_arithmetic(expression: str) -> None:
    with pytest.raises(formula.FormulaError):
        formula.evaluate(expression, {"a": 1.0})


def test_formula_arithmetic() -> None:
    assert formula.evaluate("(a + b) / 2", {"a": 1.0, "b": 0.5}) == 0.75
    assert formula.evaluate("min(a, b) ** 2 + abs(-1)", {"a": 0.5, "b": 0.9}) == 1.25
    assert formula.evaluate("a > 0.5", {"a": 0.7}) == 1.0


class FakeJudge:
    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.calls: list[dict[str, Any]] = []

    def complete(
        self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        self.calls.append({"model": model, "messages": messages, "params": params})
        return self.answer, {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}

    def embed(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] if "cat" in t else [0.6, 0.8] for t in texts]


def test_label_and_score_model_graders_parse_the_judges_json() -> None:
    label = {
        "type": "label_model",
        "name": "l",
        "model": "judge",
        "input": [{"role": "user", "content": "Answer: {{sample.output_text}}"}],
        "labels": ["good", "bad"],
        "passing_labels": ["good"],
    }
    judge = FakeJudge('{"label": "good"}')
    result = graders.grade(label, {}, {"output_text": "hi"}, judge)
    assert result.passed and result.sample and result.sample["label"] == "good"
    assert judge.calls[0]["messages"][-1]["content"] == "Answer: hi"
    assert judge.calls[0]["params"]["response_format"]["json_schema"]["schema"]["properties"][
        "label"
    ]["enum"] == ["good", "bad"]
    bad = graders.grade(label, {}, {"output_text": "hi"}, FakeJudge("no idea"))
    assert bad.error and not bad.passed
    score = {**label, "type": "score_model", "range": [0, 10], "pass_threshold": 7}
    score.pop("labels"), score.pop("passing_labels")
    graded = graders.grade(score, {}, {"output_text": "hi"}, FakeJudge('{"result": 8}'))
    assert graded.passed and graded.score == 8.0
    clipped = graders.grade(score, {}, {"output_text": "hi"}, FakeJudge('{"result": 42}'))
    assert clipped.score == 10.0


def test_cosine_uses_the_providers_embeddings() -> None:
    spec = {
        "type": "text_similarity",
        "name": "c",
        "input": "{{sample.output_text}}",
        "reference": "a dog",
        "evaluation_metric": "cosine",
        "pass_threshold": 0.5,
    }
    result = graders.grade(spec, {}, {"output_text": "a cat"}, FakeJudge(""))
    assert result.score == pytest.approx(0.6) and result.passed


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "code", "param"),
    [
        ({"type": "regex", "name": "x"}, "unknown_grader_type", "g.type"),
        (
            {"type": "python", "name": "p", "source": "def grade(s, i): return 1"},
            "python_grader_disabled",
            "g.type",
        ),
        (
            {
                "type": "string_check",
                "name": "s",
                "input": "{{item.missing}}",
                "reference": "x",
                "operation": "eq",
            },
            "invalid_template",
            "g",
        ),
        (
            {
                "type": "string_check",
                "name": "s",
                "input": "x",
                "reference": "x",
                "operation": "regex",
            },
            "invalid_grader",
            "g.operation",
        ),
        (
            {
                "type": "multi",
                "name": "m",
                "graders": {
                    "a": {
                        "type": "string_check",
                        "name": "a",
                        "input": "x",
                        "reference": "y",
                        "operation": "eq",
                    }
                },
                "calculate_output": "b + 1",
            },
            "invalid_grader",
            "g.calculate_output",
        ),
    ],
)
def test_bad_graders_are_precise_400s(spec: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        graders.validate(spec, "g", item_schema={"type": "object", "properties": {"answer": {}}})
    assert (
        raised.value.code == code
        and raised.value.param == param
        and raised.value.status_code == 400
    )


def test_meteor_is_refused_without_wordnet() -> None:
    if metrics.meteor_available():
        pytest.skip("WordNet is installed here; meteor is served")
    spec = {
        "type": "text_similarity",
        "name": "m",
        "input": "x",
        "reference": "y",
        "evaluation_metric": "meteor",
        "pass_threshold": 0.5,
    }
    with pytest.raises(InvalidRequest) as raised:
        graders.validate(spec, "g")
    assert raised.value.code == "metric_unavailable"


# --- templates and statistics ---------------------------------------------------------------


def test_templating() -> None:
    namespaces = {
        "item": {"q": "why?", "tags": ["a", "b"], "n": 3},
        "sample": {"output_text": "ok"},
    }
    assert render("Q: {{ item.q }} A: {{sample.output_text}}", namespaces) == "Q: why? A: ok"
    assert render("{{item.n}}", namespaces) == "3"
    assert resolve("{{item.tags}}", namespaces) == ["a", "b"]
    with pytest.raises(TemplateError):
        render("{{item.nope}}", namespaces)
    with pytest.raises(TemplateError):
        check_against_schema("{{sample.output_text}}", {}, has_sample=False)


def test_bootstrap_interval_is_seeded_and_brackets_the_mean() -> None:
    differences = np.array([1.0] * 8 + [0.0] * 2)
    first = bootstrap_ci(differences, 2000, 7)
    assert first == bootstrap_ci(differences, 2000, 7)
    assert first[0] <= 0.8 <= first[1] and first[1] <= 1.0
    assert bootstrap_ci(np.zeros(5), 500, 1) == (0.0, 0.0)
