import hydra
from hydra import errors


def test_public_names_are_deliberate():
    assert sorted(hydra.__all__) == sorted([
        "ANY", "NO_STREAM", "STREAM_EXISTS", "AppendResult", "CorruptLog", "HydraError",
        "InvalidArgument", "NewEvent", "RecordedEvent", "ScavengeResult", "Snapshot",
        "SnapshotSaved", "Store", "StoreLocked", "StreamMetadata",
        "StreamAppend", "StreamExists", "StreamInfo", "StreamNotFound", "StreamPage", "TrackingConflict", "Unavailable",
        "WrongExpectedVersion", "open",
    ])
    for name in hydra.__all__:
        assert hasattr(hydra, name)


def test_constants():
    assert (hydra.ANY, hydra.NO_STREAM, hydra.STREAM_EXISTS) == (-1, 0, -2)
    assert hydra.open == hydra.Store.open


def test_error_hierarchy():
    for cls in (errors.WrongExpectedVersion, errors.StreamExists, errors.StreamNotFound,
                errors.InvalidArgument, errors.StoreLocked, errors.CorruptLog,
                errors.Unavailable, errors.StorageError):
        assert issubclass(cls, hydra.HydraError)
    e = errors.WrongExpectedVersion("s", 3, 5)
    assert e.current_version == 5 and "5" in str(e)


def test_errors_pickle():
    import pickle

    for e in (errors.WrongExpectedVersion("s", 3, 5), errors.StreamExists("s", 2),
              errors.StreamNotFound("s"), errors.TrackingConflict("app", 3, 5)):
        again = pickle.loads(pickle.dumps(e))
        assert type(again) is type(e) and str(again) == str(e)
