"""The embedded default's filesystem broker: a message is visible only once complete."""

from __future__ import annotations

import json
from pathlib import Path

from kombu import Connection

from service import broker


def _connection(folder: Path) -> Connection:
    return Connection(
        "filesystem://",
        transport_options={"data_folder_in": str(folder), "data_folder_out": str(folder)},
    )


def test_filesystem_urls_resolve_to_the_atomic_transport(tmp_path: Path) -> None:
    with _connection(tmp_path) as connection:
        assert isinstance(connection.transport, broker.AtomicFilesystemTransport)


def test_a_put_leaves_only_whole_messages_and_they_round_trip(tmp_path: Path) -> None:
    with _connection(tmp_path) as connection:
        queue = connection.SimpleQueue("submit")
        for number in range(20):
            queue.put({"n": number, "padding": "x" * 10_000})
        files = sorted(tmp_path.iterdir())
        # No partial file left behind; every message file parses on its own.
        assert len(files) == 20 and all(f.name.endswith(".submit.msg") for f in files)
        assert all(json.loads(f.read_bytes())["body"] for f in files)
        received = [queue.get(timeout=1).payload["n"] for _ in range(20)]
        assert sorted(received) == list(range(20))
        queue.close()
