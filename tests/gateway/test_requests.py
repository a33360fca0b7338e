"""Parsing and validation of client input, without a server."""

from __future__ import annotations

import pytest

from hydra.storage.engine import NewEvent
from hydra.errors import InvalidArgument
from hydra.gateway._requests import parse_append, parse_read_query
from hydra.limits import Limits

L = Limits()


def test_single_event_spellings_are_one_field():
    for body in (
        b'{"eventId":"a","eventType":"T","data":"eA==","metadata":"bQ==","expectedVersion":3}',
        b'{"event_id":"a","event_type":"T","data":"eA==","metadata":"bQ==","expected_version":3}',
        b'{"EventID":"a","EVENTTYPE":"T","Data":"eA==","Metadata":"bQ==","ExpectedVersion":3}',
    ):
        cmd = parse_append("s", body, L)
        assert cmd.events == [NewEvent(b"x", "a", "T", b"m")]
        assert (cmd.expected_version, cmd.sync, cmd.batch) == (3, False, False)


def test_defaults():
    cmd = parse_append("s", b"{}", L)
    assert cmd.events == [NewEvent(b"", "", "", b"")]
    assert cmd.expected_version == 0


def test_batch():
    cmd = parse_append("s", b'{"events":[{"data":"eA=="},{"event_id":"b"}],"sync":true,'
                            b'"expected_version":-1}', L)
    assert cmd.batch and cmd.sync and cmd.expected_version == -1
    assert [e.event_id for e in cmd.events] == ["", "b"]


@pytest.mark.parametrize("limits, body, words", [
    (Limits(max_event_size=4), b'{"data":"eHh4eHg="}', "limit is 4"),
    (Limits(max_batch_size=5), b'{"events":[{"data":"eHh4"},{"data":"eHh4"}]}', "limit is 5"),
    (Limits(max_batch_events=1), b'{"events":[{},{}]}', "limit is 1"),
    (Limits(max_event_id=2), b'{"eventId":"abc"}', "eventId"),
    (Limits(max_event_type=2), b'{"eventType":"abc"}', "eventType"),
])
def test_limits(limits, body, words):
    with pytest.raises(InvalidArgument, match=words):
        parse_append("s", body, limits)


def test_stream_id_limit():
    with pytest.raises(InvalidArgument, match="limit is 3"):
        parse_append("abcd", b"{}", Limits(max_stream_id=3))


def test_read_query():
    q = parse_read_query([("from", "5"), ("limit", "2"), ("direction", "backward"),
                          ("min_position", "9")], L, "version")
    assert (q.start, q.limit, q.backward, q.min_position) == (5, 2, True, 9)
    q = parse_read_query([], L, "version")
    assert (q.start, q.limit, q.backward, q.min_position) == (None, None, False, 0)
    with pytest.raises(InvalidArgument, match="limit must be between 0 and 10"):
        parse_read_query([("limit", "11")], Limits(max_read_limit=10), "version")
    with pytest.raises(InvalidArgument, match="decimal integer"):
        parse_read_query([("from", "1" * 5000)], L, "version")


def test_batch_text_check_agrees_with_the_check_of_each():
    """``texts_pass`` (a batch's IDs or types at once) never passes what
    ``check_text`` would refuse, at the limit and past it, for control
    characters, C1 characters, lone surrogates and multi-byte text."""
    from hydra.limits import texts_pass

    samples = ["", "a", "a" * 8, "a" * 9, "é", "é" * 4, "é" * 5, "a\x00", "\x1f", "x\x7f",
               "\x85", "\x9f", "\ud800", "a\udc00b", "日本", "ok-id", "tab\there", "€€"]
    for first in samples:
        for second in samples:
            values = [first, "fine", second]
            each = True
            for v in values:
                try:
                    L.check_text(v, "id", 8)
                except InvalidArgument:
                    each = False
            if texts_pass(values, 8):
                assert each, values
            elif all(v.isascii() for v in values):
                assert not each, values  # (ASCII text is decided at once)
    assert texts_pass([], 8)
