"""The stored report seen for another model of the same encoding: context, price, too_long."""

from __future__ import annotations

from pathlib import Path

from service.files.validation.retarget import retarget
from service.files.validation.validator import validate_file

from .helpers import FAST_SETTINGS, chat, lines_of, write_lines


def test_retarget_recomputes_context_findings_and_estimate(tmp_path: Path) -> None:
    examples = [chat(i) for i in range(60)]
    for i in (3, 7):
        examples[i]["messages"][2]["content"] = "word " * 6000  # ~6k tokens
    path = write_lines(tmp_path / "t.jsonl", lines_of(examples))
    stored = validate_file(path, model="gpt-3.5-turbo-0125", workers=1, settings=FAST_SETTINGS)
    assert stored.tokens.n_too_long == 0 and stored.verdict == "pass"

    smaller = retarget(stored, "gpt-3.5-turbo-0613", FAST_SETTINGS)  # 4,096-token context
    assert smaller.model == "gpt-3.5-turbo-0613" and smaller.context_limit == 4_096
    assert smaller.tokens.n_too_long == 2
    assert smaller.counts_by_code == {"too_long": 2}
    [finding] = smaller.findings
    assert finding.line is None and "2 examples are over" in finding.message
    assert smaller.verdict == "warn" and smaller.counts_by_severity == {"error": 0, "warning": 2}
    assert smaller.estimate.billed_tokens_per_epoch < stored.estimate.billed_tokens_per_epoch
    assert smaller.tokens.total == stored.tokens.total  # the same counts, re-targeted

    back = retarget(smaller, "gpt-3.5-turbo-0125", FAST_SETTINGS)
    assert back.counts_by_code == {} and back.verdict == "pass"
