"""The eventsourcing library's own contract cases, bound to a Hydra factory.

``contract_cases(make_env)`` returns the library's test classes subclassed for
one mode; ``make_env(test)`` gives the settings of a fresh, empty store for the
test (a directory, or a server) and may register its cleanup with
``test.addCleanup``. Each test module binds the classes to module names.

Enabled beyond the required cases: ``optional_test_insert_subscribe`` (live
subscriptions). The example application case is expected to fail at one
assertion, the list of all of an aggregate's snapshots (a Hydra snapshot replaces
the one before it); ``test_example_application_snapshots`` runs the same
application to the end with that difference. Nothing is skipped: the
library's throughput cases (``test_performance``, ``test_concurrent_*``) are
short (at most 10,000 events) and run as they are; the figures worth comparing
come from benchmarks/bench_eventsourcing.py.
"""

from __future__ import annotations

import os
import unittest
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.domain import Aggregate as DomainAggregate
from eventsourcing.tests.application import BankAccounts, ExampleApplicationTestCase
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    InfrastructureFactoryTestCase,
    NonInterleavingNotificationIDsBaseCase,
    ProcessRecorderTestCase,
    TrackingRecorderTestCase,
)
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import Environment, clear_topic_cache

import hydra.eventsourcing as hes
from hydra.storage.snapshot_history import KEPT

MakeEnv = Callable[[unittest.TestCase], dict[str, str]]


class TrackingSubclass(hes.HydraTrackingRecorder):
    """One class for every mode: the library caches a recorder class by its topic,
    so two classes of one name (one per mode) in one process would collide."""


def contract_cases(make_env: MakeEnv) -> dict[str, type]:
    class FactoryMixin:
        def factory(self) -> hes.Factory:
            env = Environment(env={"PERSISTENCE_MODULE": "hydra.eventsourcing",
                                   **make_env(self)})  # type: ignore[arg-type]
            f = InfrastructureFactory.construct(env)
            self.addCleanup(f.close)  # type: ignore[attr-defined]
            assert isinstance(f, hes.Factory)
            return f

    class Aggregate(FactoryMixin, AggregateRecorderTestCase):
        def create_recorder(self) -> Any:
            return self.factory().aggregate_recorder()

    class Application(FactoryMixin, ApplicationRecorderTestCase):
        def create_recorder(self) -> Any:
            return self.factory().application_recorder()

        def test_insert_subscribe(self) -> None:
            self.optional_test_insert_subscribe()

        def test_subscribe_after_an_id_not_reached_yet(self) -> None:
            recorder = self.create_recorder()
            top = recorder.max_notification_id() or 0
            originator = self.new_originator_id()
            with recorder.subscribe(gt=top + 3) as subscription:
                ids = recorder.insert_events(
                    [StoredEvent(originator, v, "t", b"s") for v in range(1, 6)])
                self.assertEqual(ids, list(range(top + 1, top + 6)))
                got = []
                for notification in subscription:
                    got.append((notification.id, notification.originator_version))
                    if len(got) == 2:
                        break
            self.assertEqual(got, [(top + 4, 4), (top + 5, 5)])

    class Tracking(FactoryMixin, TrackingRecorderTestCase):
        def create_recorder(self) -> Any:
            return self.factory().tracking_recorder()

    class Process(FactoryMixin, ProcessRecorderTestCase):
        def create_recorder(self) -> Any:
            return self.factory().process_recorder()

    class NonInterleaving(FactoryMixin, NonInterleavingNotificationIDsBaseCase):
        def create_recorder(self) -> Any:
            return self.factory().application_recorder()

    class Factory(InfrastructureFactoryTestCase[hes.Factory]):
        def setUp(self) -> None:
            self.env = Environment("TestCase", {"PERSISTENCE_MODULE": "hydra.eventsourcing",
                                                **make_env(self)})
            super().setUp()

        def expected_factory_class(self) -> type[hes.Factory]:
            return hes.Factory

        def expected_aggregate_recorder_class(self) -> type:
            return hes.HydraAggregateRecorder

        def expected_application_recorder_class(self) -> type:
            return hes.HydraApplicationRecorder

        def expected_tracking_recorder_class(self) -> type:
            return hes.HydraTrackingRecorder

        def tracking_recorder_subclass(self) -> type:
            return TrackingSubclass

        def expected_process_recorder_class(self) -> type:
            return hes.HydraProcessRecorder

    class Example(ExampleApplicationTestCase):
        expected_factory_topic = "hydra.eventsourcing:Factory"

        def setUp(self) -> None:
            saved = dict(os.environ)
            self.addCleanup(lambda: (os.environ.clear(), os.environ.update(saved)))
            os.environ["PERSISTENCE_MODULE"] = "hydra.eventsourcing"
            os.environ.update(make_env(self))
            clear_topic_cache()

        def test_example_application(self) -> None:
            super().test_example_application()

        def test_example_application_snapshots(self) -> None:
            """The snapshot history the library sees: the newest KEPT versions, listed
            oldest first and chosen by version; older ones replay the events."""
            app = BankAccounts(env={"IS_SNAPSHOTTING_ENABLED": "y"})
            self.addCleanup(app.close)
            account_id = app.open_account(full_name="Alice", email_address="a@example.com")
            for n in range(1, 8):
                app.credit_account(account_id, Decimal(n))
            assert app.snapshots is not None
            first = DomainAggregate.INITIAL_VERSION
            for v in range(first, first + 6):
                app.take_snapshot(account_id, version=v)
            listed = [s.originator_version for s in app.snapshots.get(account_id)]
            self.assertEqual(listed, list(range(first + 6 - KEPT, first + 6)))
            self.assertEqual([s.originator_version for s in
                              app.snapshots.get(account_id, desc=True, limit=2)],
                             [first + 5, first + 4])
            self.assertEqual([s.originator_version for s in
                              app.snapshots.get(account_id, gt=first + 3, lte=first + 4)],
                             [first + 4])
            self.assertEqual([s.originator_version for s in
                              app.snapshots.get(account_id, desc=True, limit=1,
                                                lte=first + 3)], [first + 3])
            self.assertEqual(list(app.snapshots.get(account_id, desc=True, limit=1,
                                                    lte=first)), [])
            # An older version than the newest kept one is not stored.
            app.take_snapshot(account_id, version=first + 2)
            self.assertEqual([s.originator_version for s in app.snapshots.get(account_id)],
                             listed)
            # Every version loads right: from a kept snapshot or from the events.
            for v in range(first, first + 8):
                got = app.repository.get(account_id, version=v)
                self.assertEqual((got.version, got.balance),
                                 (v, Decimal(sum(range(1, v - first + 1)))))
            now = app.repository.get(account_id)
            self.assertEqual((now.version, now.balance), (first + 7, Decimal(28)))

    return {"Aggregate": Aggregate, "Application": Application, "Tracking": Tracking,
            "Process": Process, "NonInterleaving": NonInterleaving, "Factory": Factory,
            "Example": Example}


# The test class each case is bound to in a test module.
TEST_NAMES = {"Aggregate": "TestAggregateRecorder", "Application": "TestApplicationRecorder",
              "Tracking": "TestTrackingRecorder", "Process": "TestProcessRecorder",
              "NonInterleaving": "TestNonInterleavingNotificationIDs",
              "Factory": "TestInfrastructureFactory", "Example": "TestExampleApplication"}


def bind(make_env: MakeEnv, namespace: dict[str, Any]) -> dict[str, type]:
    """Put the cases for ``make_env`` in a test module's ``namespace`` (its
    ``globals()``) under their TEST_NAMES; returns them by kind."""
    cases = contract_cases(make_env)
    for kind, name in TEST_NAMES.items():
        namespace[name] = type(name, (cases[kind],), {"__module__": namespace["__name__"]})
    return cases
