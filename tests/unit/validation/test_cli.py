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
