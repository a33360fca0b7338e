"""The eventsourcing library's contract suites against hydra.eventsourcing, embedded
(``HYDRA_PATH``): a fresh data directory per test."""

from __future__ import annotations

import shutil
import tempfile
import unittest

from tests.es._cases import contract_cases


def _fresh_directory(test: unittest.TestCase) -> dict[str, str]:
    directory = tempfile.mkdtemp(prefix="hydra-es-")
    test.addCleanup(shutil.rmtree, directory, True)
    return {"HYDRA_PATH": directory}


_cases = contract_cases(_fresh_directory)


class TestAggregateRecorder(_cases["Aggregate"]):  # type: ignore[misc,valid-type]
    pass


class TestApplicationRecorder(_cases["Application"]):  # type: ignore[misc,valid-type]
    pass


class TestTrackingRecorder(_cases["Tracking"]):  # type: ignore[misc,valid-type]
    pass


class TestProcessRecorder(_cases["Process"]):  # type: ignore[misc,valid-type]
    pass


class TestNonInterleavingNotificationIDs(_cases["NonInterleaving"]):  # type: ignore[misc,valid-type]
    pass


class TestInfrastructureFactory(_cases["Factory"]):  # type: ignore[misc,valid-type]
    pass


class TestExampleApplication(_cases["Example"]):  # type: ignore[misc,valid-type]
    pass
