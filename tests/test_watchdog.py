"""The supervisord watchdog's decisions (the make run tests drive it for real)."""

from __future__ import annotations

import io

import pytest

from hydra._watchdog import CRASHES, SIGNALLED, Watchdog, reason, status_in_log


def _dog(tmp_path, log: str = "", status: int | None = 1) -> tuple[Watchdog, io.StringIO]:
    (tmp_path / "writer.log").write_text(log)
    console = io.StringIO()
    return Watchdog(str(tmp_path), console, lambda name, group, pid: status), console


def test_reason_is_the_programs_own_line(tmp_path) -> None:
    (tmp_path / "writer.log").write_text(
        "2026 INFO starting\nhydra writer: cannot start: data directory /d is locked\n\n")
    assert reason(str(tmp_path), "writer") == "data directory /d is locked"
    (tmp_path / "gateway-0.log").write_text("Traceback...\nValueError: boom\n")
    assert reason(str(tmp_path), "gateway-0") == "ValueError: boom"
    assert "no log" in reason(str(tmp_path), "nobody")


def test_backoff_is_told_once_and_fatal_stops(tmp_path) -> None:
    dog, console = _dog(tmp_path, "hydra writer: cannot start: bad\n")
    assert not dog.handle("PROCESS_STATE_BACKOFF", {"processname": "writer"})
    assert not dog.handle("PROCESS_STATE_BACKOFF", {"processname": "writer"})
    assert console.getvalue().count("retrying: bad") == 1
    assert dog.handle("PROCESS_STATE_FATAL", {"processname": "writer"})
    assert "hydra: writer cannot start: bad" in console.getvalue()
    assert (tmp_path / "fatal").read_text().strip() == "hydra: writer cannot start: bad"
    # Once stopping, nothing more is said.
    assert not dog.handle("PROCESS_STATE_FATAL", {"processname": "gateway-0"})
    assert "gateway-0" not in console.getvalue()


def test_a_crash_loop_stops_the_server(tmp_path) -> None:
    dog, console = _dog(tmp_path, "hydra writer: No space left on device\n")
    exited = {"processname": "writer", "expected": "0"}
    for _ in range(CRASHES - 1):
        assert not dog.handle("PROCESS_STATE_EXITED", exited)
    assert not dog.handle("PROCESS_STATE_EXITED", {"processname": "writer", "expected": "1"})
    assert dog.handle("PROCESS_STATE_EXITED", exited)
    assert f"writer crashed {CRASHES} times" in console.getvalue()


def test_killed_programs_are_not_a_crash_loop(tmp_path) -> None:
    dog, console = _dog(tmp_path, "", status=-1)  # supervisord's status for a signal
    for _ in range(3 * CRASHES):
        assert not dog.handle("PROCESS_STATE_EXITED", {"processname": "gateway-0",
                                                       "groupname": "gateway",
                                                       "expected": "0"})
    assert console.getvalue() == ""


@pytest.mark.parametrize("status", [78, 2])
def test_a_program_that_cannot_start_stops_the_server_at_its_first_exit(tmp_path, status) -> None:
    """Even when it failed after `startsecs` (a loaded machine): retrying cannot help."""
    dog, console = _dog(tmp_path, "hydra writer: cannot start: locked\n", status=status)
    assert dog.handle("PROCESS_STATE_EXITED", {"processname": "writer", "expected": "1"})
    assert "hydra: writer cannot start: locked" in console.getvalue()
    assert "locked" in (tmp_path / "fatal").read_text()


def test_other_expected_exits_are_not_fatal(tmp_path) -> None:
    dog, console = _dog(tmp_path, "hydra gateway: cannot start: no writer opened\n", status=1)
    assert not dog.handle("PROCESS_STATE_EXITED", {"processname": "gateway-0",
                                                   "groupname": "gateway", "expected": "1"})
    assert console.getvalue() == ""


SUPERVISORD_LOG = """\
2026-12-02 04:00:00,100 INFO spawned: 'writer' with pid 120
2026-12-02 04:00:00,200 INFO spawned: 'gateway-0' with pid 12
2026-12-02 04:00:03,300 INFO success: writer entered RUNNING state, process has stayed up for > than 3 seconds (startsecs)
2026-12-02 04:00:09,400 WARN exited: gateway-0 (terminated by SIGKILL; not expected)
2026-12-02 04:00:09,500 INFO spawned: 'gateway-0' with pid 130
2026-12-02 04:00:10,600 WARN exited: writer (exit status 1; not expected)
2026-12-02 04:00:10,700 INFO spawned: 'writer' with pid 131
2026-12-02 04:00:11,800 WARN exited: gateway-0 (terminated by SIGSEGV (core dumped); not expected)
2026-12-02 04:00:12,900 INFO exited: writer (exit status 78; expected)
2026-12-02 04:00:13,000 INFO spawned: 'gateway-0' with pid 120
"""


def test_the_exit_status_is_the_one_of_the_pid_that_exited() -> None:
    """Read from supervisord's log, where the exit of each pid stays after the
    program was started again (its process information then has the new one)."""
    assert status_in_log(SUPERVISORD_LOG, "writer", "120") == 1
    assert status_in_log(SUPERVISORD_LOG, "writer", "131") == 78
    assert status_in_log(SUPERVISORD_LOG, "gateway-0", "12") == SIGNALLED
    assert status_in_log(SUPERVISORD_LOG, "gateway-0", "130") == SIGNALLED
    # Not exited yet (a reused pid: its last spawn counts), unknown pid or program.
    assert status_in_log(SUPERVISORD_LOG, "gateway-0", "120") is None
    assert status_in_log(SUPERVISORD_LOG, "gateway-0", "1") is None
    assert status_in_log(SUPERVISORD_LOG, "writer", "13") is None
    assert status_in_log("", "writer", "120") is None


def test_an_exit_of_unknown_status_counts_as_a_crash(tmp_path) -> None:
    dog, console = _dog(tmp_path, "hydra writer: boom\n", status=None)
    for _ in range(CRASHES - 1):
        assert not dog.handle("PROCESS_STATE_EXITED", {"processname": "writer", "expected": "0"})
    assert dog.handle("PROCESS_STATE_EXITED", {"processname": "writer", "expected": "0"})
    # An expected exit of unknown status is not a refusal to start.
    dog, console = _dog(tmp_path, "", status=None)
    assert not dog.handle("PROCESS_STATE_EXITED", {"processname": "writer", "expected": "1"})
