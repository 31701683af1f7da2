"""Files made from files: the article's train/validation split, prompt/completion to chat
conversion, and a reproducible sample for human review."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlmodel import Session

from service.errors import InvalidRequest
from service.files.models import File
from service.files.service import create_derived_file, file_path, get_file
from service.files.validation import transform


def _stem(record: File) -> str:
    name = record.filename
    return name[: -len(".jsonl")] if name.lower().endswith(".jsonl") else name


def split(
    session: Session, team_id: str, file_id: str, *, validation_fraction: float, seed: int
) -> tuple[File, File]:
    """Two new files, deterministic for (content, fraction, seed); no example in both."""
    source = get_file(session, team_id, file_id)
    path = file_path(source)
    counts: dict[str, int] = {}
    train_scratch = path.with_name(f".{source.id}.split-{seed}.train")
    valid_scratch = path.with_name(f".{source.id}.split-{seed}.valid")
    try:
        try:
            counts["train"], counts["valid"] = transform.split_file(
                path,
                train_scratch,
                valid_scratch,
                validation_fraction=validation_fraction,
                seed=seed,
            )
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="validation_fraction") from exc
        if counts["train"] == 0 or counts["valid"] == 0:
            raise InvalidRequest(
                "The file has too few examples to split into two non-empty files.", param="file_id"
            )
        stem = _stem(source)
        train = create_derived_file(
            session,
            team_id,
            f"{stem}.train.jsonl",
            lambda dst: dst.write_bytes(train_scratch.read_bytes()),
        )
        valid = create_derived_file(
            session,
            team_id,
            f"{stem}.valid.jsonl",
            lambda dst: dst.write_bytes(valid_scratch.read_bytes()),
        )
    finally:
        train_scratch.unlink(missing_ok=True)
        valid_scratch.unlink(missing_ok=True)
    return train, valid


def convert_to_chat(
    session: Session, team_id: str, file_id: str, *, system_prompt: str | None = None
) -> File:
    source = get_file(session, team_id, file_id)
    path = file_path(source)

    def write(dst: Path) -> None:
        try:
            transform.convert_prompt_completion_to_chat(path, dst, system_prompt=system_prompt)
        except ValueError as exc:
            raise InvalidRequest(
                f"File {file_id} is not prompt/completion data: {exc}",
                param="file_id",
                code="not_prompt_completion",
            ) from exc

    return create_derived_file(session, team_id, f"{_stem(source)}.chat.jsonl", write)


def sample(
    session: Session, team_id: str, file_id: str, *, n: int, seed: int
) -> list[dict[str, Any]]:
    source = get_file(session, team_id, file_id)
    return [
        {"line": line, "example": example}
        for line, example in transform.sample_lines(file_path(source), n, seed)
    ]
