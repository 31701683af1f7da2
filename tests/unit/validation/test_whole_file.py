"""Files that are not JSONL as a whole get one finding with the fix (issue 11 item 15), and
`ftq files convert` turns them into JSONL."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from service.files.validation.transform import convert_to_jsonl
from service.files.validation.validator import validate_file

from .helpers import FAST_SETTINGS, chat, clean_chat_lines, pc, write_lines


def _only_finding(path: Path) -> tuple[str, str, str]:
    report = validate_file(path, workers=1, settings=FAST_SETTINGS)
    assert report.verdict == "block"
    assert len(report.findings) == 1, report.counts_by_code
    [finding] = report.findings
    assert report.counts_by_code == {finding.code: 1}
    assert finding.line is None and finding.severity == "error"
    return finding.code, finding.message, finding.suggestion


def test_utf16_and_utf32_files_are_one_finding_re_encode_as_utf8(tmp_path: Path) -> None:
    text = "".join(line + "\n" for line in clean_chat_lines(30))
    for encoding, code in (
        ("utf-16", "encoding_utf16"),  # with a BOM
        ("utf-16-le", "encoding_utf16"),  # without one
        ("utf-32", "encoding_utf32"),
    ):
        path = tmp_path / f"{encoding}.jsonl"
        path.write_text(text, encoding=encoding)
        found, message, fix = _only_finding(path)
        assert found == code
        assert "must be UTF-8" in message and "Re-encode it as UTF-8" in fix


def test_json_array_files_are_one_finding_convert_to_jsonl(tmp_path: Path) -> None:
    examples = [chat(i) for i in range(30)]
    pretty = tmp_path / "pretty.jsonl"
    pretty.write_text(json.dumps(examples, indent=2))
    compact = tmp_path / "compact.json"
    compact.write_text(json.dumps(examples))
    for path in (pretty, compact):
        code, message, fix = _only_finding(path)
        assert code == "json_array_file" and "30 elements" in message
        assert "ftq files convert" in fix


def test_csv_files_are_one_finding(tmp_path: Path) -> None:
    for delimiter in (",", "\t"):
        path = tmp_path / f"train{len(delimiter)}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle, delimiter=delimiter)
            writer.writerow(["prompt", "completion"])
            writer.writerows([[f"q {i}, really", f"a {i}"] for i in range(30)])
        code, message, fix = _only_finding(path)
        assert code == "csv_file" and "prompt, completion" in message
        assert "ftq files convert" in fix


def test_empty_and_whitespace_files_are_one_finding(tmp_path: Path) -> None:
    for name, content in (("empty.jsonl", ""), ("blank.jsonl", "\n \n\t\n")):
        path = tmp_path / name
        path.write_text(content)
        code, _message, _fix = _only_finding(path)
        assert code == "empty_file"


def test_jsonl_with_broken_first_lines_is_still_scanned_line_by_line(tmp_path: Path) -> None:
    lines = ["a,b,c", "[1]", *clean_chat_lines(30)]
    report = validate_file(write_lines(tmp_path / "t.jsonl", lines), workers=1)
    assert report.counts_by_code["invalid_json"] == 1
    assert report.counts_by_code["not_an_object"] == 1
    assert report.examples == 30


def test_convert_array_csv_and_utf16_to_jsonl(tmp_path: Path) -> None:
    examples = [chat(i) for i in range(20)]
    array = tmp_path / "a.json"
    array.write_text(json.dumps(examples, indent=1))
    assert convert_to_jsonl(array, tmp_path / "a.jsonl") == ("json_array_file", 20)
    assert [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()] == examples

    table = tmp_path / "t.csv"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Prompt", "completion", "ignored"])
        writer.writerows([[pc(i)["prompt"], pc(i)["completion"], "x"] for i in range(20)])
    assert convert_to_jsonl(table, tmp_path / "t.jsonl") == ("csv_file", 20)
    assert json.loads((tmp_path / "t.jsonl").read_text().splitlines()[3]) == pc(3)

    messages = tmp_path / "m.csv"
    with messages.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "messages"])
        writer.writerows([[i, json.dumps(chat(i)["messages"])] for i in range(20)])
    assert convert_to_jsonl(messages, tmp_path / "m.jsonl") == ("csv_file", 20)
    assert json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0]) == chat(0)

    utf16 = tmp_path / "u.jsonl"
    utf16.write_text("".join(line + "\n" for line in clean_chat_lines(20)), encoding="utf-16")
    assert convert_to_jsonl(utf16, tmp_path / "u8.jsonl")[0] == "encoding_utf16"
    report = validate_file(tmp_path / "u8.jsonl", workers=1, settings=FAST_SETTINGS)
    assert report.examples == 20 and report.format == "chat"


def test_convert_refuses_jsonl_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    jsonl = write_lines(tmp_path / "ok.jsonl", clean_chat_lines(5))
    with pytest.raises(ValueError, match="already JSONL"):
        convert_to_jsonl(jsonl, tmp_path / "out.jsonl")
    bad = tmp_path / "bad.csv"
    bad.write_text("question,answer\nq,a\nq2,a2\n")
    with pytest.raises(ValueError, match="no prompt/completion or messages"):
        convert_to_jsonl(bad, tmp_path / "bad.jsonl")
    assert not (tmp_path / "bad.jsonl").exists()
