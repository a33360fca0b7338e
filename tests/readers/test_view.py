"""ReadOnlyView on its own: opening, advance (never past committed), refresh, torn tails."""

from __future__ import annotations

import os

import pytest

import hydra
from hydra.storage.format import FLAG_BATCH_END, encode_event
from hydra.errors import CorruptLog, StorageError, StoreClosed
from hydra.readers import ReadOnlyView

SEGMENT = 4096


def seg(directory: str, n: int) -> str:
    return os.path.join(directory, f"hydra-{n:05d}.log")


def test_hydra_open_read_only_gives_a_view_without_the_lock(data_dir):
    with hydra.open(data_dir, segment_size=SEGMENT) as store:
        store.append("s", "e1", b"one")
        with hydra.open(data_dir, read_only=True) as view:
            assert isinstance(view, ReadOnlyView)
            assert [e.data for e in view.read_stream("s")] == [b"one"]
            # The Store keeps writing; the view sees it after a refresh.
            store.append("s", "e2", b"two")
            assert view.stream_version("s") == 1
            assert view.refresh() == store.committed_position
            assert view.stream_version("s") == 2
            assert "committed=" in repr(view)


def test_view_needs_an_existing_data_directory(short_dir):
    with pytest.raises(StorageError, match="does not exist"):
        ReadOnlyView.open(os.path.join(short_dir, "missing"))
    with pytest.raises(StorageError, match="no manifest"):
        ReadOnlyView.open(short_dir)
    assert not os.path.exists(os.path.join(short_dir, "hydra.manifest"))
    with pytest.raises(hydra.InvalidArgument):
        ReadOnlyView.open(short_dir, limits=5)  # type: ignore[arg-type]


def test_advance_never_reads_past_the_committed_position(data_dir):
    store = hydra.open(data_dir, segment_size=SEGMENT)
    view = ReadOnlyView.open(data_dir)
    r1 = store.append("s", "", b"1")
    r2 = store.append("s", "", b"2")
    store.append("s", "", b"3")
    assert view.committed_position == 0 and view.stream_version("s") == 0
    # Committed up to the start of the second event: only the first is visible,
    # although the later records are right there in the shared file.
    assert view.advance(r2.position) == r2.position
    assert [e.data for e in view.read_all()] == [b"1"]
    assert view.stream_version("s") == 1
    # Late or repeated announcements change nothing.
    assert view.advance(r1.position) == r2.position
    assert view.advance(r2.position) == r2.position
    assert view.advance(store.committed_position) == store.committed_position
    assert [e.data for e in view.read_stream("s")] == [b"1", b"2", b"3"]
    store.close()
    view.close()


def test_advance_beyond_the_log_is_an_error_and_keeps_the_valid_part(data_dir):
    store = hydra.open(data_dir, segment_size=SEGMENT)
    view = ReadOnlyView.open(data_dir)
    r = store.append("s", "", b"1")
    store.append("s", "", b"2")
    end = store.committed_position
    store.close()
    # A position in the middle of a record cannot be a committed position.
    with pytest.raises(StorageError, match="valid only up to"):
        view.advance(r.position + 5)
    assert view.committed_position == 0
    with pytest.raises(StorageError, match="does not exist"):
        view.advance(end + 10 * SEGMENT)
    assert view.committed_position == end
    assert view.stream_version("s") == 2
    with pytest.raises(hydra.InvalidArgument):
        view.advance(-1)
    view.close()
    with pytest.raises(StoreClosed):
        view.advance(end)
    with pytest.raises(StoreClosed):
        view.refresh()


def test_refresh_follows_new_segments(data_dir):
    with hydra.open(data_dir, segment_size=SEGMENT) as store:
        with ReadOnlyView.open(data_dir) as view:
            for i in range(300):
                store.append(f"s{i % 3}", f"e{i}", b"x" * 40)
            assert os.path.exists(seg(data_dir, 5))
            assert view.refresh() == store.committed_position
            assert [view.stream_version(f"s{i}") for i in range(3)] == [100, 100, 100]
            assert list(view.read_all()) == list(store.read_all())


def test_refresh_ignores_a_torn_tail(data_dir):
    with hydra.open(data_dir, segment_size=SEGMENT) as store:
        store.append("s", "e1", b"one")
        end = store.committed_position
    # A batch whose last record (the one that closes it) never made it to disk,
    # followed by garbage: as a writer that died in the middle of a write leaves it.
    half = b"".join(encode_event(b"s", f"t{i}".encode(), b"", b"", b"torn", 1 + i, 0, 0)
                    for i in range(2))
    with open(seg(data_dir, 0), "r+b") as f:
        f.seek(end)
        f.write(half + b"\x17garbage")
    with ReadOnlyView.open(data_dir) as view:
        assert view.committed_position == end
        assert [e.event_id for e in view.read_all()] == ["e1"]
        assert view.refresh() == end
        # Once the batch is complete (the writer restarted and rewrote the tail),
        # it shows up whole.
        whole = half + encode_event(b"s", b"t2", b"", b"", b"torn", 3, 0, FLAG_BATCH_END)
        with open(seg(data_dir, 0), "r+b") as f:
            f.seek(end)
            f.write(whole + bytes(16))
        assert view.refresh() == end + len(whole)
        assert [e.event_id for e in view.read_all()] == ["e1", "t0", "t1", "t2"]


def test_damaged_record_in_a_closed_segment_is_tolerated_like_recovery(data_dir):
    with hydra.open(data_dir, segment_size=SEGMENT) as store:
        positions = [store.append("s", f"e{i}", b"payload-%d" % i).position for i in range(100)]
    victim = positions[3]
    with open(seg(data_dir, 0), "r+b") as f:
        f.seek(victim + 40 + 1 + 2)  # inside the data bytes: the CRC no longer matches
        f.write(b"#")
    with ReadOnlyView.open(data_dir) as view:
        assert view.stream_version("s") == 100
        assert [e.version for e in view.read_stream("s", 0, 3)] == [0, 1, 2]
        with pytest.raises(CorruptLog):
            list(view.read_stream("s", 3, 1))
        assert [e.version for e in view.read_stream("s", 4, 2)] == [4, 5]


def test_public_names():
    import hydra.readers

    assert sorted(hydra.readers.__all__) == ["ReadOnlyView", "Tailer"]
    from hydra.readers.tailer import Tailer

    assert hydra.readers.Tailer is Tailer
