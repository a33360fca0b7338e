"""Bad input gets InvalidArgument with a clear message, and nothing is written."""

from __future__ import annotations

import pytest

import hydra
from hydra import NewEvent
from hydra.limits import Limits


@pytest.fixture
def limited(data_dir):
    limits = Limits(max_stream_id=16, max_event_id=8, max_event_type=8, max_event_size=100,
                    max_batch_events=3, max_batch_size=150)
    with hydra.open(data_dir, limits=limits) as s:
        yield s


BAD_STREAM_IDS = [
    ("", "empty"),
    ("x" * 17, "limit"),
    ("a/b", "forbidden"),
    ("tab\there", "forbidden"),
    ("nul\x00", "forbidden"),
    ("\ud800", "surrogate"),
    (None, "string"),
    (b"bytes", "string"),
    (12, "string"),
]


@pytest.mark.parametrize("stream_id,match", BAD_STREAM_IDS)
def test_bad_stream_ids(limited, stream_id, match):
    with pytest.raises(hydra.InvalidArgument, match=match):
        limited.append(stream_id, "", b"x")
    with pytest.raises(hydra.InvalidArgument, match=match):
        limited.append_events(stream_id, [NewEvent(b"x")])
    with pytest.raises(hydra.InvalidArgument, match=match):
        list(limited.read_stream(stream_id))
    with pytest.raises(hydra.InvalidArgument, match=match):
        limited.delete_stream(stream_id)
    assert limited.committed_position == 0


def test_unicode_stream_ids_are_fine(limited):
    limited.append("ünïcødé-✓", "", b"x")
    assert limited.stream_version("ünïcødé-✓") == 1


@pytest.mark.parametrize("kwargs,match", [
    ({"event_id": "x" * 9}, "event ID is 9 bytes"),
    ({"event_id": 5}, "event ID must be a string"),
    ({"event_id": "a\nb"}, "control character"),
    ({"event_type": "t" * 9}, "event type is 9 bytes"),
    ({"event_type": b"T"}, "event type must be a string"),
    ({"data": "text"}, "data must be bytes"),
    ({"data": None}, "data must be bytes"),
    ({"data": b"x" * 101}, "limit is 100"),
    ({"data": b"x" * 60, "metadata": b"m" * 41}, "limit is 100"),
    ({"metadata": "m"}, "metadata must be bytes"),
    ({"expected_version": "0"}, "expected_version must be an integer"),
    ({"expected_version": True}, "expected_version must be an integer"),
    ({"expected_version": -5}, "expected_version must be"),
    ({"expected_version": 2**70}, "expected_version must be"),
])
def test_bad_event_fields(limited, kwargs, match):
    args = {"stream_id": "s", "event_id": "", "data": b"x", "expected_version": hydra.ANY}
    args.update(kwargs)
    with pytest.raises(hydra.InvalidArgument, match=match):
        limited.append(**args)
    assert limited.committed_position == 0


@pytest.mark.parametrize("events,match", [
    ([], "at least one"),
    ("not a list", "must be a list"),
    ([NewEvent(b"x")] * 4, "limit is 3"),
    ([NewEvent(b"x" * 80), NewEvent(b"x" * 80)], "limit is 150"),
    ([NewEvent(b"x"), "nope"], r"events\[1\]"),
    ([NewEvent(b"x"), NewEvent("str")], r"events\[1\].data"),
    ([NewEvent(b"x", "id"), NewEvent(b"y", "id")], "twice"),
])
def test_bad_batches(limited, events, match):
    with pytest.raises(hydra.InvalidArgument, match=match):
        limited.append_events("s", events)
    assert limited.committed_position == 0


def test_memoryview_and_bytearray_data_are_accepted(limited):
    limited.append("s", "", bytearray(b"ab"), metadata=memoryview(b"cd"))
    [ev] = limited.read_stream("s")
    assert (ev.data, ev.metadata) == (b"ab", b"cd")


@pytest.mark.parametrize("kwargs,match", [
    ({"sync": "sometimes"}, "sync must be one of"),
    ({"sync_interval": 0}, "sync_interval"),
    ({"sync_interval": "1"}, "sync_interval"),
    ({"sync_batch": 0}, "sync_batch"),
    ({"segment_size": 100}, "segment_size"),
    ({"segment_size": "big"}, "segment_size"),
    ({"limits": {"max_event_size": 5}}, "limits"),
])
def test_bad_open_options(data_dir, kwargs, match):
    with pytest.raises(hydra.InvalidArgument, match=match):
        hydra.open(data_dir, **kwargs)


@pytest.mark.parametrize("field", ["max_stream_id", "max_event_size", "max_batch_events"])
@pytest.mark.parametrize("value", [0, -1, "10", 1.5])
def test_bad_limits(field, value):
    with pytest.raises(hydra.InvalidArgument, match=field):
        Limits(**{field: value})


def test_bad_manifest_is_a_clear_error(data_dir):
    hydra.open(data_dir).close()
    with open(f"{data_dir}/hydra.manifest", "w") as f:
        f.write("{not json")
    with pytest.raises(hydra.HydraError, match="manifest"):
        hydra.open(data_dir)


def test_wrong_format_version_is_refused(data_dir):
    import json

    hydra.open(data_dir).close()
    path = f"{data_dir}/hydra.manifest"
    doc = json.load(open(path))
    doc["version"] = 99
    json.dump(doc, open(path, "w"))
    with pytest.raises(hydra.HydraError, match="version 99"):
        hydra.open(data_dir)


def test_path_must_be_a_path():
    with pytest.raises(hydra.InvalidArgument, match="path"):
        hydra.open(42)
