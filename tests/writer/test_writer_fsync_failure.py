"""A failed fsync: the writer stays up, answers, and takes no more writes.

After a failed fsync the kernel may have dropped the pages it could not write
(or kept them, marked clean), so what is on disk is unknown and a later fsync
that succeeds proves nothing. The writer therefore refuses every write until it
is restarted, with a clear StorageFailed (HTTP 507, gRPC UNAVAILABLE), while
health keeps answering. The EIO comes from a start-up hook of the Python
process (tests/writer/faults/sitecustomize.py); the writer code runs unchanged.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from hydra.errors import StorageFailed
from hydra.storage.engine import NewEvent
from hydra.writer.client import WriterClient

FAULTS = os.path.join(os.path.dirname(__file__), "faults")


def test_failed_fsync_refuses_writes_until_restart(start_writer, short_dir):
    trigger = os.path.join(short_dir, "fail-fsync")
    env = {**os.environ, "PYTHONPATH": FAULTS, "HYDRA_TEST_FAIL_FSYNC": trigger}
    w = start_writer("--sync", "every-write", env=env)

    async def faulty() -> None:
        async with WriterClient(w.command_endpoint, timeout=10) as c:
            ok = await c.append("s", [NewEvent(b"a", "e1")])
            assert ok.version == 0
            open(trigger, "w").close()
            with pytest.raises(StorageFailed, match="fsync of the log failed .*Input/output"):
                await c.append("s", [NewEvent(b"b", "e2")])
            os.unlink(trigger)
            # The disk "works" again, but the writer cannot know what it lost.
            with pytest.raises(StorageFailed, match="until the writer is restarted"):
                await c.append("s", [NewEvent(b"c", "e3")])
            health = await c.health()
            assert health["status"] == "failing"
            assert "fsync of the log failed" in health["storage"]
            assert health["committed_position"] == ok.position + 1 or \
                health["committed_position"] > ok.position
            assert w.proc is not None and w.proc.poll() is None  # still up

    asyncio.run(faulty())
    assert w.terminate() == 1  # not a clean stop: the next start recovers
    log = open(w.log_path, errors="replace").read()
    assert log.count("appends refused") == 1, log
    assert "Traceback" not in log

    w2 = start_writer("--sync", "every-write")

    async def after() -> None:
        async with WriterClient(w2.command_endpoint, timeout=10) as c:
            again = await c.append("s", [NewEvent(b"a", "e1")])
            assert again.duplicate and again.version == 0  # acknowledged: kept
            new = await c.append("s", [NewEvent(b"c", "e3")])
            assert not new.duplicate

    asyncio.run(after())
