"""hydra.snapshots: each strategy's advice, names and bad arguments."""

from __future__ import annotations

import pytest

from hydra.errors import InvalidArgument
from hydra.snapshots import (
    AfterEachEvent,
    Composite,
    EveryNEvents,
    Never,
    OnEventTypes,
    Strategy,
    TimeBased,
)


def test_every_n_events():
    s = EveryNEvents(3)
    assert [v for v in range(10) if s.should_snapshot("s", v, "T")] == [2, 5, 8]
    assert s.name == "every-3-events" and isinstance(s, Strategy)
    assert all(EveryNEvents(1).should_snapshot("s", v, "") for v in range(5))


def test_on_event_types():
    s = OnEventTypes("Closed", "Renamed")
    assert s.should_snapshot("s", 0, "Closed") and s.should_snapshot("s", 9, "Renamed")
    assert not s.should_snapshot("s", 0, "Deposited") and not s.should_snapshot("s", 0, "")
    assert s.name == "on-event-types:Closed,Renamed"


def test_time_based_per_stream():
    now = [100.0]
    s = TimeBased(10, clock=lambda: now[0])
    assert s.should_snapshot("a", 0, "")  # never seen: due
    assert not s.should_snapshot("a", 1, "")
    assert s.should_snapshot("b", 0, "")
    now[0] = 109.9
    assert not s.should_snapshot("a", 2, "")
    now[0] = 110.0
    assert s.should_snapshot("a", 3, "") and not s.should_snapshot("a", 4, "")
    assert s.name == "every-10-seconds"


def test_after_each_event_and_never():
    assert all(AfterEachEvent().should_snapshot("s", v, "") for v in range(3))
    assert not any(Never().should_snapshot("s", v, "X") for v in range(3))
    assert (AfterEachEvent().name, Never().name) == ("after-each-event", "never")


def test_composite_is_any_and_asks_every_strategy():
    now = [0.0]
    timed = TimeBased(5, clock=lambda: now[0])
    s = Composite(EveryNEvents(100), OnEventTypes("Closed"), timed)
    assert s.should_snapshot("a", 0, "")  # the timer's first advice
    assert not s.should_snapshot("a", 1, "")
    assert s.should_snapshot("a", 2, "Closed")
    assert s.should_snapshot("a", 99, "")
    now[0] = 5.0
    assert s.should_snapshot("a", 3, "")
    assert not Composite(Never(), Never()).should_snapshot("a", 0, "")
    assert s.name == "any(every-100-events, on-event-types:Closed, every-5-seconds)"


@pytest.mark.parametrize("make", [
    lambda: EveryNEvents(0), lambda: EveryNEvents(-1), lambda: EveryNEvents(1.5),
    lambda: EveryNEvents(True), lambda: OnEventTypes(), lambda: OnEventTypes(""),
    lambda: OnEventTypes(3), lambda: TimeBased(0), lambda: TimeBased(-1),
    lambda: TimeBased("5"), lambda: TimeBased(float("nan")), lambda: Composite(),
    lambda: Composite(object()),
])
def test_bad_arguments(make):
    with pytest.raises(InvalidArgument):
        make()
