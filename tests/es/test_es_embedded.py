"""The eventsourcing library's contract suites against hydra.eventsourcing, embedded
(``HYDRA_PATH``): a fresh data directory per test."""

from __future__ import annotations

import shutil
import tempfile
import unittest

from tests.es._cases import bind


def _fresh_directory(test: unittest.TestCase) -> dict[str, str]:
    directory = tempfile.mkdtemp(prefix="hydra-es-")
    test.addCleanup(shutil.rmtree, directory, True)
    return {"HYDRA_PATH": directory}


_cases = bind(_fresh_directory, globals())


def test_the_documented_example_runs(tmp_path) -> None:
    """docs/EVENTSOURCING.md's example, as written, twice on one directory."""
    import subprocess
    import sys
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "EVENTSOURCING.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    runs = [subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    assert runs[0].stdout == "['roll over']\n[1, 2]\n"
    assert runs[1].stdout == "['roll over']\n[1, 2, 3, 4]\n"


def test_settings_are_checked_with_one_clear_error(tmp_path) -> None:
    import pytest

    from hydra.eventsourcing import Factory

    for env, says in [({}, "exactly one of HYDRA_PATH"),
                      ({"HYDRA_PATH": str(tmp_path), "HYDRA_URI": "127.0.0.1:1"},
                       "exactly one of HYDRA_PATH"),
                      ({"HYDRA_PATH": str(tmp_path), "HYDRA_SYNC": "never"}, "HYDRA_SYNC"),
                      ({"HYDRA_PATH": str(tmp_path), "ORIGINATOR_ID_TYPE": "int"},
                       "ORIGINATOR_ID_TYPE")]:
        with pytest.raises(OSError, match=says):
            Factory(env)


def test_a_path_that_cannot_hold_a_store_is_an_operational_error(tmp_path) -> None:
    import pytest
    from eventsourcing.persistence import OperationalError

    from hydra.eventsourcing import Factory

    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OperationalError, match="cannot open the Hydra store"):
        Factory({"HYDRA_PATH": str(tmp_path / "file")})


def test_events_not_written_by_the_module_are_a_data_error(tmp_path) -> None:
    import uuid

    import pytest
    from eventsourcing.persistence import DataError

    import hydra
    from hydra.eventsourcing import Factory

    f = Factory({"HYDRA_PATH": str(tmp_path)})
    try:
        oid = uuid.uuid4()
        f.backend.append_events(str(oid), [hydra.NewEvent(b"{}", metadata=b"not a version")])
        recorder = f.application_recorder()
        with pytest.raises(DataError, match="not written by hydra.eventsourcing"):
            recorder.select_events(oid)
        with pytest.raises(DataError, match="one application per store"):
            recorder.select_notifications(None, 10)
    finally:
        f.close()


def test_factories_of_one_directory_share_one_store(tmp_path) -> None:
    from eventsourcing.persistence import StoredEvent

    from hydra.eventsourcing import Factory

    a, b = Factory({"HYDRA_PATH": str(tmp_path)}), Factory({"HYDRA_PATH": str(tmp_path)})
    try:
        assert a.backend is b.backend
        import uuid

        ids = a.application_recorder().insert_events(
            [StoredEvent(uuid.uuid4(), 1, "t", b"s")])
        assert b.application_recorder().max_notification_id() == ids[0] == 1
    finally:
        a.close()
        assert not b.backend._closed  # still in use by b
        b.close()
        assert a.backend._closed


def test_ids_of_an_insert_of_several_aggregates_follow_the_events_given(tmp_path) -> None:
    """Each aggregate's events are written together (in order of first appearance):
    the IDs come back in the order of the stored events, each naming its event."""
    import uuid

    from eventsourcing.persistence import StoredEvent

    from hydra.eventsourcing import Factory

    factory = Factory({"HYDRA_PATH": str(tmp_path / "data")})
    try:
        recorder = factory.application_recorder()
        a, b = uuid.uuid4(), uuid.uuid4()
        given = [StoredEvent(a, 1, "t", b"a1"), StoredEvent(b, 1, "t", b"b1"),
                 StoredEvent(a, 2, "t", b"a2"), StoredEvent(b, 2, "t", b"b2")]
        ids = recorder.insert_events(given)
        assert ids == [1, 3, 2, 4]
        by_id = {n.id: n.state for n in recorder.select_notifications(1, 10)}
        assert [by_id[i] for i in ids] == [e.state for e in given]
    finally:
        factory.close()


def test_an_application_closed_by_the_garbage_collector_inside_an_open(tmp_path) -> None:
    """An Application the program never closed is closed by its ``__del__`` when
    the garbage collector finds it, which may be in the middle of another
    factory's opening of a store in the same thread (here: the full collection
    after rebuilding a large log's index): that must neither deadlock nor lose
    either store."""
    import shutil
    import threading

    import hydra
    from hydra.eventsourcing import Factory
    from hydra.storage.persistent import INDEX_DIR
    from hydra.storage.rebuild import _TRIM_EVENTS

    big = tmp_path / "big"
    with hydra.open(big, sync="async") as store:
        for n in range(0, _TRIM_EVENTS, 5000):
            store.append_events(f"s-{n}", [hydra.NewEvent(data=b"x", event_id=f"e{n + i}")
                                           for i in range(5000)])
    shutil.rmtree(big / INDEX_DIR)  # the next open rebuilds it, then collects

    def scenario() -> None:
        left = Factory({"HYDRA_PATH": str(tmp_path / "left")})

        class Cycle:
            def __del__(self) -> None:
                left.close()

        garbage = Cycle()
        garbage.self = garbage  # type: ignore[attr-defined]  # only a full collection frees it
        del garbage
        other = Factory({"HYDRA_PATH": str(big)})
        # The left store was closed and released: a new factory can open it again.
        again = Factory({"HYDRA_PATH": str(tmp_path / "left")})
        again.close()
        other.close()
        done.set()

    done = threading.Event()
    thread = threading.Thread(target=scenario, daemon=True)
    thread.start()
    thread.join(60)
    assert done.is_set(), "opening a store deadlocked on a release from the garbage collector"
