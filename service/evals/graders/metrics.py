"""Text-similarity metrics, each computed by the library that defines it.

fuzzy_match: rapidfuzz ``fuzz.ratio``; bleu and chrf: sacrebleu's sentence scores; gleu:
nltk's ``sentence_gleu``; rouge_1..5 and rouge_l: Google's rouge-score (F-measure, Porter
stemming). Every score is scaled to [0, 1]. meteor needs nltk's WordNet data, which ftq
does not download at run time: it is refused unless that corpus is installed.
token_f1 and exact_match (SQuAD's) and chrf are ftq extensions used by the templates.
"""

from __future__ import annotations

import collections
import functools
import re
import string

from rapidfuzz import fuzz
from sacrebleu.metrics import BLEU, CHRF

OPENAI_METRICS = (
    "cosine",
    "fuzzy_match",
    "bleu",
    "gleu",
    "meteor",
    "rouge_1",
    "rouge_2",
    "rouge_3",
    "rouge_4",
    "rouge_5",
    "rouge_l",
)
FTQ_METRICS = ("token_f1", "exact_match", "chrf")
METRICS = OPENAI_METRICS + FTQ_METRICS


METEOR_UNAVAILABLE = (
    "evaluation_metric 'meteor' needs nltk's WordNet corpus, which is not installed on this "
    "ftq deployment (ftq downloads nothing at run time); use rouge_l, bleu or fuzzy_match."
)


class MetricUnavailable(ValueError):
    pass


@functools.cache
def _bleu() -> BLEU:
    # effective_order: short sentences without 4-gram matches still get a score.
    return BLEU(effective_order=True)


@functools.cache
def _chrf() -> CHRF:
    return CHRF()


@functools.cache
def _rouge(kind: str):  # type: ignore[no-untyped-def]
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([kind], use_stemmer=True)


def meteor_available() -> bool:
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
    except (LookupError, ImportError, OSError):
        return False
    return True


def fuzzy_match(output: str, reference: str) -> float:
    return fuzz.ratio(output, reference) / 100.0


def bleu(output: str, reference: str) -> float:
    return _bleu().sentence_score(output, [reference]).score / 100.0


def chrf(output: str, reference: str) -> float:
    return _chrf().sentence_score(output, [reference]).score / 100.0


def gleu(output: str, reference: str) -> float:
    from nltk.translate.gleu_score import sentence_gleu

    return float(sentence_gleu([reference.split()], output.split()))


def rouge(kind: str, output: str, reference: str) -> float:
    name = "rougeL" if kind == "rouge_l" else "rouge" + kind.rsplit("_", 1)[1]
    return float(_rouge(name).score(reference, output)[name].fmeasure)


def meteor(output: str, reference: str) -> float:
    if not meteor_available():
        raise MetricUnavailable(METEOR_UNAVAILABLE)
    from nltk.translate.meteor_score import meteor_score

    return float(meteor_score([reference.split()], output.split()))


_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(output: str, reference: str) -> float:
    """SQuAD v1.1's exact match: equal after normalisation."""
    return float(normalize_answer(output) == normalize_answer(reference))


def token_f1(output: str, reference: str) -> float:
    """SQuAD v1.1's per-example F1 over normalised tokens."""
    predicted, gold = normalize_answer(output).split(), normalize_answer(reference).split()
    if not predicted or not gold:
        return float(predicted == gold)
    common = collections.Counter(predicted) & collections.Counter(gold)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(gold)
    return 2 * precision * recall / (precision + recall)


def similarity(metric: str, output: str, reference: str) -> float:
    """Every metric but cosine (which needs the provider's embeddings)."""
    if metric == "fuzzy_match":
        return fuzzy_match(output, reference)
    if metric == "bleu":
        return bleu(output, reference)
    if metric == "gleu":
        return gleu(output, reference)
    if metric == "chrf":
        return chrf(output, reference)
    if metric == "meteor":
        return meteor(output, reference)
    if metric == "token_f1":
        return token_f1(output, reference)
    if metric == "exact_match":
        return exact_match(output, reference)
    if metric.startswith("rouge_"):
        return rouge(metric, output, reference)
    raise MetricUnavailable(f"unknown evaluation_metric '{metric}'")


def _streams(references: list[str] | list[list[str]]) -> list[list[str]]:
    # One reference per output, or several reference streams (sacrebleu's layout).
    if references and isinstance(references[0], list):
        return [list(stream) for stream in references]  # type: ignore[arg-type]
    return [list(references)]  # type: ignore[arg-type]


def corpus_bleu(outputs: list[str], references: list[str] | list[list[str]]) -> float:
    """sacrebleu's corpus BLEU (0-100), the figure papers report."""
    return float(BLEU().corpus_score(outputs, _streams(references)).score)


def corpus_chrf(outputs: list[str], references: list[str] | list[list[str]]) -> float:
    """sacrebleu's corpus chrF (0-100)."""
    return float(CHRF().corpus_score(outputs, _streams(references)).score)


def macro_f1(predictions: list[str], labels: list[str], classes: list[str]) -> float:
    """Unweighted mean of per-class F1 over ``classes`` (sklearn's ``average='macro'``)."""
    scores = []
    for cls in classes:
        tp = sum(1 for p, g in zip(predictions, labels, strict=True) if p == cls and g == cls)
        fp = sum(1 for p, g in zip(predictions, labels, strict=True) if p == cls and g != cls)
        fn = sum(1 for p, g in zip(predictions, labels, strict=True) if p != cls and g == cls)
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return sum(scores) / len(scores) if scores else 0.0
