"""An eventsourcing *system* on hydra.eventsourcing (embedded): a process
application follows another through its notification log, with its tracking
records stored atomically with its events, across a restart of the system."""

from __future__ import annotations

import time
import uuid

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.system import MultiThreadedRunner, ProcessApplication, SingleThreadedRunner, System


class Dog(Aggregate):
    @event("Registered")
    def __init__(self, name: str) -> None:
        self.name = name


class Tally(Aggregate):
    ID = uuid.uuid5(uuid.NAMESPACE_URL, "tally")

    def __init__(self) -> None:
        self.count = 0

    @classmethod
    def create_id(cls) -> uuid.UUID:
        return cls.ID

    @event("Counted")
    def count_one(self) -> None:
        self.count += 1


class DogSchool(Application[uuid.UUID]):
    def register(self, name: str) -> None:
        self.save(Dog(name))


class Tallies(ProcessApplication[uuid.UUID]):
    @singledispatchmethod
    def policy(self, domain_event: object, processing_event: object) -> None:
        pass

    @policy.register
    def _(self, domain_event: Dog.Registered, processing_event) -> None:  # type: ignore[no-untyped-def]
        try:
            tally = self.repository.get(Tally.ID)
        except AggregateNotFoundError:
            tally = Tally()
        tally.count_one()
        processing_event.collect_events(tally)

    def count(self) -> int:
        try:
            return self.repository.get(Tally.ID).count  # type: ignore[no-any-return]
        except AggregateNotFoundError:
            return 0


def _wait_for(tallies: Tallies, count: int) -> None:
    deadline = time.monotonic() + 20
    while tallies.count() < count and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tallies.count() == count


def test_a_process_application_follows_once_per_notification_across_restarts(tmp_path) -> None:
    env = {"PERSISTENCE_MODULE": "hydra.eventsourcing",
           # One store per application, by the library's per-application settings.
           "DOGSCHOOL_HYDRA_PATH": str(tmp_path / "school"),
           "TALLIES_HYDRA_PATH": str(tmp_path / "tallies")}
    system = System(pipes=[[DogSchool, Tallies]])
    expected = 0
    for runner_class in (SingleThreadedRunner, MultiThreadedRunner, SingleThreadedRunner):
        runner = runner_class(system, env=env)
        runner.start()
        try:
            school, tallies = runner.get(DogSchool), runner.get(Tallies)
            # What the earlier runs counted is there; nothing is counted twice.
            _wait_for(tallies, expected)
            for i in range(5):
                school.register(f"dog-{expected + i}")
            expected += 5
            _wait_for(tallies, expected)
            assert tallies.recorder.max_tracking_id("DogSchool") == expected
            assert school.recorder.max_notification_id() == expected
        finally:
            runner.stop()
