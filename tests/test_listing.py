"""The stream listing (``list_streams``) against a model, for every kind of reader:
the embedded Store, a view as of a position the index has passed, a view whose
index lags the log (a tail), and a view with no index at all."""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable

import pytest

import hydra
import hydra.limits
from hydra.errors import InvalidArgument
from hydra.readers import ReadOnlyView
from hydra.storage.listing import MAX_LIST_LIMIT

Model = dict[str, tuple[int, int]]  # stream -> (event count, last position)


def _ops(store: hydra.Store, rng: random.Random, model: Model, n: int) -> None:
    """``n`` random appends (new and old streams, batches) and deletes, into ``model``."""
    for _ in range(n):
        sid = f"{rng.choice(['order', 'user', 'ord'])}-{rng.randrange(12)}"
        if rng.random() < 0.15 and sid in model:
            store.delete_stream(sid)
            del model[sid]
            continue
        k = rng.randint(1, 3)
        events = [hydra.NewEvent(b"{}", f"{sid}-{rng.random()}", "t") for _ in range(k)]
        result = store.append_events(sid, events, hydra.ANY)
        count = model.get(sid, (0, 0))[0] + k
        model[sid] = (count, result.position)


def _all_pages(list_page: Callable[..., hydra_page], prefix: str, limit: int) -> list[tuple]:
    out: list[tuple] = []
    after = ""
    for _ in range(1000):
        page = list_page(prefix=prefix, after=after, limit=limit)
        assert len(page.streams) <= limit
        out += [(s.stream_id, s.event_count, s.last_position) for s in page.streams]
        if not page.next:
            return out
        assert len(page.streams) == limit
        after = page.next
    raise AssertionError("paging does not end")


hydra_page = object  # for the annotation above


def _check(reader, model: Model) -> None:
    newest = sorted(((sid, c, p) for sid, (c, p) in model.items()), key=lambda e: -e[2])
    for limit in (1, 3, 100):
        assert _all_pages(reader.list_streams, "", limit) == newest
    for prefix in ("ord", "order-", "user-1", "zzz"):
        by_id = sorted(e for e in newest if e[0].startswith(prefix))
        for limit in (2, 100):
            assert _all_pages(reader.list_streams, prefix, limit) == by_id


def test_store_matches_model(data_dir):
    rng = random.Random(1)
    model: Model = {}
    with hydra.open(data_dir, segment_size=8192) as store:
        _check(store, model)
        for _ in range(6):
            _ops(store, rng, model, 40)
            _check(store, model)
        page = store.list_streams(limit=1)
        info = page.streams[0]
        assert info.version == info.event_count - 1
        assert page.committed_position == store.committed_position


def test_view_as_of_a_position_the_index_has_passed(data_dir):
    """The view lags one step: the index holds writes the view must not show."""
    rng = random.Random(2)
    model: Model = {}
    with hydra.open(data_dir, segment_size=8192) as store:
        view = ReadOnlyView.open(data_dir)
        try:
            for _ in range(25):
                before = dict(model)
                position = store.committed_position
                _ops(store, rng, model, 6)
                store.list_streams(limit=1)  # the Store flushes its index before reads
                view.advance(position)
                _check(view, before)
            view.advance(store.committed_position)
            _check(view, model)
        finally:
            view.close()


def test_view_with_a_lagging_index_and_without_one(data_dir, tmp_path):
    rng = random.Random(3)
    model: Model = {}
    saved = str(tmp_path / "index-copy")
    with hydra.open(data_dir, segment_size=8192) as store:
        _ops(store, rng, model, 60)
        store.list_streams(limit=1)
        shutil.copytree(f"{data_dir}/index", saved)
        _ops(store, rng, model, 60)
    # The index of an earlier position: the view reads the rest of the log (its tail).
    shutil.rmtree(f"{data_dir}/index")
    shutil.copytree(saved, f"{data_dir}/index")
    with ReadOnlyView.open(data_dir) as view:
        assert view._tail is not None and len(view._tail)
        _check(view, model)
    shutil.rmtree(f"{data_dir}/index")
    with ReadOnlyView.open(data_dir) as view:
        assert view._pindex is None
        _check(view, model)


def test_long_ids_and_unicode(data_dir):
    limits = hydra.limits.Limits(max_stream_id=2000)
    long_id = "x" * 1500
    with hydra.open(data_dir, limits=limits) as store:
        store.append(long_id, "a", b"", hydra.ANY)
        store.append("é-1", "b", b"", hydra.ANY)
        names = [s.stream_id for s in store.list_streams().streams]
        assert names == ["é-1", long_id]
        assert [s.stream_id for s in store.list_streams(prefix="é").streams] == ["é-1"]


@pytest.mark.parametrize("kwargs, message", [
    ({"limit": 0}, "limit"),
    ({"limit": MAX_LIST_LIMIT + 1}, "limit"),
    ({"limit": "5"}, "limit"),
    ({"after": "abc"}, "after must be a log position"),
    ({"after": "-1"}, "after must be a log position"),
    ({"after": 5}, "after must be a string"),
    ({"prefix": None}, "prefix must be a string"),
    ({"prefix": "a\0"}, "NUL"),
])
def test_bad_arguments(store, kwargs, message):
    with pytest.raises(InvalidArgument, match=message):
        store.list_streams(**kwargs)


def test_verify_checks_the_listing_table(data_dir):
    import lmdb

    from hydra.storage.verify import verify

    rng = random.Random(4)
    with hydra.open(data_dir, segment_size=8192) as store:
        _ops(store, rng, {}, 80)
    assert verify(data_dir).index == "ok"
    env = lmdb.open(f"{data_dir}/index", max_dbs=8)
    try:
        with env.begin(write=True) as txn:
            cur = txn.cursor(db=env.open_db(b"recent", txn=txn))
            assert cur.last() and cur.delete()
    finally:
        env.close()
    report = verify(data_dir)
    assert report.index == "wrong"
    assert any("listing" in p for p in report.index_problems)
