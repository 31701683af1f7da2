from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.stack import Stack, Team, drop_stale_databases

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """The shared stack: Postgres, Redis, sandbox, API, one worker, one beat."""
    drop_stale_databases()
    shared = Stack("shared", extra_env={"FTQ_MAX_UPLOAD_BYTES": str(2 * 1024 * 1024)})
    try:
        shared.start()
        yield shared
    except BaseException:
        print(shared.logs())
        raise
    finally:
        shared.stop()


@pytest.fixture
def team(stack: Stack) -> Team:
    return stack.create_team()


@pytest.fixture
def other_team(stack: Stack) -> Team:
    return stack.create_team("other")


CHAT_EXAMPLES = [
    ("What is the capital of France?", "Paris."),
    ("Translate 'hello' into French.", "Bonjour."),
    ("What colour is the sky on a clear day?", "Blue."),
    ("How many legs does a spider have?", "Eight."),
    ("Who wrote Hamlet?", "William Shakespeare."),
    ("What is 12 times 12?", "144."),
    ("Name the largest ocean.", "The Pacific Ocean."),
    ("What gas do plants absorb?", "Carbon dioxide."),
    ("What is the freezing point of water in Fahrenheit?", "32 degrees Fahrenheit."),
    ("Which metal is liquid at room temperature?", "Mercury."),
    ("What is the tallest mountain on Earth?", "Mount Everest."),
]


def write_chat_dataset(path: Path, examples: list[tuple[str, str]] = CHAT_EXAMPLES) -> Path:
    import json

    with path.open("w") as handle:
        for question, answer in examples:
            record = {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": answer},
                ]
            }
            handle.write(json.dumps(record) + "\n")
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_chat_dataset(tmp_path / "train.jsonl")
