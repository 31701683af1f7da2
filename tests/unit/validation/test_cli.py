"""ftq files validate/split: output and exit codes, through CliRunner and a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from cli.main import main

from .helpers import clean_chat_lines, write_lines

REPO_ROOT = Path(__file__).resolve().parents[3]


def test_validate_pass_warn_block_and_usage_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    clean = write_lines(tmp_path / "clean.jsonl", clean_chat_lines(60))
    result = runner.invoke(main, ["files", "validate", str(clean)])
    assert result.exit_code == 0, result.output
    assert "verdict: PASS" in result.output

    warn = write_lines(tmp_path / "warn.jsonl", clean_chat_lines(20))
    assert runner.invoke(main, ["files", "validate", str(warn)]).exit_code == 0

    broken = write_lines(tmp_path / "broken.jsonl", [*clean_chat_lines(20), "[1]"])
    result = runner.invoke(main, ["files", "validate", str(broken), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert report["verdict"] == "block"
    assert report["counts_by_code"]["not_an_object"] == 1
    assert {"format", "examples", "tokens", "estimate", "findings"} <= report.keys()

    assert (
        runner.invoke(main, ["files", "validate", str(tmp_path / "missing.jsonl")]).exit_code == 2
    )
    assert runner.invoke(main, ["files", "validate"]).exit_code == 2


def test_validate_with_model_and_validation_file(tmp_path: Path) -> None:
    train = write_lines(tmp_path / "train.jsonl", clean_chat_lines(60))
    valid = write_lines(tmp_path / "valid.jsonl", clean_chat_lines(10, start=100))
    result = CliRunner().invoke(
        main,
        [
            "files",
            "validate",
            str(train),
            "--model",
            "gpt-3.5-turbo-0125",
            "--validation-file",
            str(valid),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["tokens"]["encoding"] == "cl100k_base"
    assert report["validation_file"]["examples"] == 10


def test_split_command(tmp_path: Path) -> None:
    src = write_lines(tmp_path / "data.jsonl", clean_chat_lines(100))
    out = tmp_path / "out"
    args = ["files", "split", str(src), "--validation", "0.1", "--seed", "7", "--out-dir", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert len((out / "data_valid.jsonl").read_text().splitlines()) == 10
    assert len((out / "data_train.jsonl").read_text().splitlines()) == 90
    assert CliRunner().invoke(main, [*args[:4], "1.5", *args[5:]]).exit_code == 2


def test_real_subprocess_exit_codes(tmp_path: Path) -> None:
    broken = write_lines(tmp_path / "broken.jsonl", ["{"] * 3)
    command = [sys.executable, "-c", "from cli.main import main; main()", "files", "validate"]
    done = subprocess.run(
        [*command, str(broken)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 1, done.stderr
    assert "invalid_json" in done.stdout
    missing = subprocess.run(
        [*command, str(tmp_path / "nope.jsonl")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2


def test_files_that_are_not_jsonl_print_one_line_with_the_fix(tmp_path: Path) -> None:
    """Issue 11 item 15: an empty, UTF-16, JSON-array or CSV file is one line, not a table
    of zeros or a finding per line."""
    runner = CliRunner()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_text("".join(x + "\n" for x in clean_chat_lines(20)), encoding="utf-16")
    array = tmp_path / "array.json"
    array.write_text(json.dumps([json.loads(x) for x in clean_chat_lines(20)], indent=2))
    table = tmp_path / "table.csv"
    table.write_text("prompt,completion\n" + "".join(f"q{i},a{i}\n" for i in range(20)))
    expected = {
        empty: ("empty_file", "Upload a JSONL file"),
        utf16: ("encoding_utf16", "Re-encode it as UTF-8"),
        array: ("json_array_file", "ftq files convert array.json array.jsonl"),
        table: ("csv_file", "ftq files convert table.csv table.jsonl"),
    }
    for path, (code, fix) in expected.items():
        result = runner.invoke(main, ["files", "validate", str(path)])
        assert result.exit_code == 1, result.output
        assert result.output.count("\n") == 1, result.output
        assert f"BLOCK {code}:" in result.output and fix in result.output


def test_errors_come_before_warnings_grouped_by_code_with_counts(tmp_path: Path) -> None:
    lines = [*clean_chat_lines(12), "{bad", "{bad", "[1]"]
    path = write_lines(tmp_path / "mixed.jsonl", lines)
    result = CliRunner().invoke(main, ["files", "validate", str(path)])
    assert result.exit_code == 1
    out = result.output
    assert out.index("errors (3)") < out.index("warnings (")
    assert "  invalid_json x2: Fix the JSON syntax" in out
    assert out.index("invalid_json x2") < out.index("not_an_object x1")  # by count
    assert out.count("Fix the JSON syntax") == 1  # the fix once per code
    assert "training line 13:" in out and "training line 14:" in out


def test_json_holds_what_it_says_and_the_cap_is_documented(tmp_path: Path) -> None:
    lines = [*clean_chat_lines(20), *["{bad"] * 150]
    path = write_lines(tmp_path / "many.jsonl", lines)
    runner = CliRunner()
    human = runner.invoke(main, ["files", "validate", str(path)]).output
    assert "invalid_json x150" in human
    assert "--json lists the first 100 findings of each code" in human
    capped = json.loads(runner.invoke(main, ["files", "validate", str(path), "--json"]).output)
    assert capped["findings_cap_per_code"] == 100 and capped["findings_truncated"]
    assert capped["counts_by_code"]["invalid_json"] == 150
    assert sum(f["code"] == "invalid_json" for f in capped["findings"]) == 100
    args = ["files", "validate", str(path), "--json", "--findings-cap", "0"]
    everything = json.loads(runner.invoke(main, args).output)
    assert sum(f["code"] == "invalid_json" for f in everything["findings"]) == 150
    assert not everything["findings_truncated"]


def test_unknown_model_warns_and_the_format_is_checked_for_the_model(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "chat.jsonl", clean_chat_lines(60))
    runner = CliRunner()
    args = ["files", "validate", str(path), "--json", "--model", "gpt-4o-mini-2024-07-81"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["counts_by_code"] == {"unknown_model": 1}
    assert report["verdict"] == "warn"
    result = runner.invoke(main, ["files", "validate", str(path), "--model", "babbage-002"])
    assert result.exit_code == 1
    assert "format_model_mismatch x1" in result.output
    result = runner.invoke(main, ["files", "validate", str(path), "--method", "dpo"])
    assert result.exit_code == 1 and "format_method_mismatch" in result.output


def test_convert_command_writes_jsonl_from_an_array_and_a_csv(tmp_path: Path) -> None:
    runner = CliRunner()
    array = tmp_path / "array.json"
    array.write_text(json.dumps([json.loads(x) for x in clean_chat_lines(60)]))
    result = runner.invoke(main, ["files", "convert", str(array), str(tmp_path / "a.jsonl")])
    assert result.exit_code == 0, result.output
    assert "60 records as JSONL (from a JSON array)" in result.output
    check = runner.invoke(main, ["files", "validate", str(tmp_path / "a.jsonl")])
    assert check.exit_code == 0 and "verdict: PASS" in check.output
    table = tmp_path / "table.csv"
    table.write_text("question,answer\nq,a\n")
    result = runner.invoke(main, ["files", "convert", str(table), str(tmp_path / "t.jsonl")])
    assert result.exit_code == 1 and "no prompt/completion or messages columns" in result.output
    same = runner.invoke(main, ["files", "convert", str(array), str(array)])
    assert same.exit_code == 2
