"""The supervisord watchdog's decisions (the make run tests drive it for real)."""

from __future__ import annotations

import io

import pytest

from hydra._watchdog import CRASHES, Watchdog, reason


def _dog(tmp_path, log: str = "", status: int = 1) -> tuple[Watchdog, io.StringIO]:
    (tmp_path / "writer.log").write_text(log)
    console = io.StringIO()
    return Watchdog(str(tmp_path), console, lambda process: status), console


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
