"""The embedded broker under concurrent writers: every message arrives, whole.

With kombu's own filesystem transport ("filesystem") the same drain fails every time here
with a JSONDecodeError on a half-written file; app.filesystem_broker writes atomically."""

from __future__ import annotations

import multiprocessing
import uuid
from pathlib import Path

from kombu import Connection

WRITERS = 3
PER_WRITER = 400


def _options(folder: Path) -> dict[str, object]:
    return {
        "data_folder_in": str(folder),
        "data_folder_out": str(folder),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "polling_interval": 0.001,
    }


def _write(folder: str, transport: str, name: str, writer: int) -> None:
    options = _options(Path(folder))
    with Connection("filesystem://", transport=transport, transport_options=options) as conn:
        queue = conn.SimpleQueue(name)
        for i in range(PER_WRITER):
            queue.put({"writer": writer, "i": i, "pad": "x" * 2000})
        queue.close()


def drain_while_writing(folder: Path, transport: str) -> set[tuple[int, int]]:
    name = f"q{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("fork")
    writers = [
        context.Process(target=_write, args=(str(folder), transport, name, w))
        for w in range(WRITERS)
    ]
    seen: set[tuple[int, int]] = set()
    options = _options(folder)
    with Connection("filesystem://", transport=transport, transport_options=options) as conn:
        queue = conn.SimpleQueue(name)
        for process in writers:
            process.start()
        while len(seen) < WRITERS * PER_WRITER:
            message = queue.get(timeout=30)
            seen.add((message.payload["writer"], message.payload["i"]))
            message.ack()
        queue.close()
    for process in writers:
        process.join(30)
    return seen


def test_no_half_written_message_is_ever_read(tmp_path: Path) -> None:
    seen = drain_while_writing(tmp_path, "app.filesystem_broker:Transport")
    assert len(seen) == WRITERS * PER_WRITER


def test_a_queue_reads_its_own_messages_in_order_beside_another_queues(tmp_path: Path) -> None:
    options = _options(tmp_path)
    transport = "app.filesystem_broker:Transport"
    with Connection("filesystem://", transport=transport, transport_options=options) as conn:
        busy, quiet = conn.SimpleQueue("busy"), conn.SimpleQueue("quiet")
        for i in range(200):
            busy.put({"i": i})
        quiet.put({"i": "only"})
        message = quiet.get(timeout=5)
        assert message.payload == {"i": "only"}
        message.ack()
        assert quiet.qsize() == 0
        got = []
        for _ in range(200):
            message = busy.get(timeout=5)
            got.append(message.payload["i"])
            message.ack()
        assert sorted(got) == list(range(200))
        busy.close()
        quiet.close()
