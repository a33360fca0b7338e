"""``hydra watchdog``: the supervisord event listener that ends a server which cannot run.

supervisord alone retries a program that cannot start, says only "exited ... not
expected" on its console, and keeps running after giving up. This listener
(``[eventlistener:watchdog]`` in supervisord.conf) watches the programs' states:

- a program in BACKOFF (it exited while starting): print why, once per reason;
- a program FATAL (it exited while starting ``startretries`` times), one that
  exited with status ``CANNOT_START`` or ``BAD_OPTIONS`` (a configuration or
  environment it cannot run with, however long it took to say so), or one that
  failed ``CRASHES`` times within ``CRASH_WINDOW`` seconds after it had started
  (exited by itself with a non-zero status; a process killed by a signal, say an
  operator's or a test's SIGKILL, does not count):
  print why, record it in ``HYDRA_LOG_DIR/fatal`` and shut supervisord down, so
  that ``make run`` ends with a non-zero status instead of retrying forever.

"Why" is the program's last line that starts with ``hydra`` (the writer and the
gateways print their start-up errors as one such line), else its last line.

The exit status of an exit is read from supervisord's own log (``exited: NAME
(exit status N; ...)`` after ``spawned: 'NAME' with pid PID``, the pid being the
event's): by the time the listener handles the event, supervisord has usually
started the program again, and its process information then holds the new
process's (empty) status. That log line needs supervisord's ``loglevel`` at
``warn`` or lower (supervisord.conf: ``info``); an exit the log does not explain
counts as a crash.
The listener's stderr is supervisord's console (``stderr_logfile=/dev/stderr``);
its stdout is the event protocol and carries nothing else.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections import defaultdict, deque
from typing import Any, TextIO
from collections.abc import Callable

FATAL_FILE = "fatal"
# The exit status of a program that cannot start because of its configuration or
# environment (sysexits' EX_CONFIG): retrying cannot help, so the watchdog stops
# the server at the first such exit, however long the program took to fail (on a
# loaded machine that can be longer than `startsecs`, after which supervisord
# would otherwise restart it forever).
CANNOT_START = 78
BAD_OPTIONS = 2  # argparse's status, and the programs' for a malformed setting
CRASHES = 5
CRASH_WINDOW = 60.0
# How much of the end of supervisord's log is searched for an exit (bytes).
LOG_TAIL = 256 * 1024
SIGNALLED = -1  # supervisord's exit status of a process killed by a signal


def reason(log_dir: str, process: str) -> str:
    """The last explanatory line of ``process``'s log."""
    path = os.path.join(log_dir, f"{process}.log")
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 16384))
            lines = [line.strip() for line in f.read().decode("utf-8", "replace").splitlines()]
    except OSError:
        return f"(no log at {path})"
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if line.startswith("hydra "):
            # "hydra writer: cannot start: X" -> "X": the caller names the program.
            why = line.partition(": ")[2]
            return why.removeprefix("cannot start: ") or line
    return lines[-1] if lines else "(its log is empty)"


def status_in_log(log: str, name: str, pid: str) -> int | None:
    """The exit status supervisord's log ``log`` gives for process ``pid`` of
    program ``name`` (``SIGNALLED`` when a signal ended it); None if it does not say."""
    spawned = re.compile(rf"spawned: '{re.escape(name)}' with pid {re.escape(pid)}$", re.M)
    starts = [m.end() for m in spawned.finditer(log)]
    if not starts:
        return None
    # (The pid's last spawn: pids are reused.) Its exit is the program's next one.
    exited = re.compile(rf"exited: {re.escape(name)} \((.*?); (?:not )?expected\)$", re.M)
    m = exited.search(log, starts[-1])
    if m is None:
        return None
    how = re.fullmatch(r"exit status (\d+)", m.group(1))
    return int(how.group(1)) if how else SIGNALLED


def _parse(line: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


class Watchdog:
    def __init__(self, log_dir: str, console: TextIO,
                 exit_status: Callable[[str, str, str], int | None] | None = None) -> None:
        self.log_dir = log_dir
        self.console = console
        # (name, group, pid) -> the status that process exited with (SIGNALLED: a
        # signal ended it; None: unknown)
        self.exit_status = exit_status or _exit_status
        self.told: dict[str, str] = {}
        self.crashes: dict[str, deque[float]] = defaultdict(deque)
        self.stopping = False  # once the server is stopping, later events add nothing

    def say(self, line: str) -> None:
        print(line, file=self.console, flush=True)

    def handle(self, event: str, payload: dict[str, str]) -> bool:
        """React to one event; True when the server must stop."""
        name = payload.get("processname", "?")
        if self.stopping:
            return False
        if event == "PROCESS_STATE_BACKOFF":
            why = reason(self.log_dir, name)
            if self.told.get(name) != why:
                self.told[name] = why
                self.say(f"hydra: {name} exited while starting, retrying: {why}")
            return False
        if event == "PROCESS_STATE_FATAL":
            return self.fatal(f"hydra: {name} cannot start: {reason(self.log_dir, name)}")
        if event != "PROCESS_STATE_EXITED":
            return False
        status = self.exit_status(name, payload.get("groupname") or name,
                                  payload.get("pid", ""))
        if payload.get("expected") == "1":
            # supervisord.conf lists CANNOT_START and BAD_OPTIONS as the programs'
            # `exitcodes` (and restarts only on other ones).
            if status in (CANNOT_START, BAD_OPTIONS):
                return self.fatal(f"hydra: {name} cannot start: {reason(self.log_dir, name)}")
            return False
        if payload.get("expected") == "0":
            if status is not None and status <= 0:
                return False  # killed by a signal: not a crash loop of its own
            now = time.monotonic()
            times = self.crashes[name]
            times.append(now)
            while times and times[0] < now - CRASH_WINDOW:
                times.popleft()
            if len(times) >= CRASHES:
                return self.fatal(f"hydra: {name} crashed {len(times)} times in "
                                  f"{CRASH_WINDOW:g} s: {reason(self.log_dir, name)}")
        return False

    def fatal(self, line: str) -> bool:
        self.stopping = True
        self.say(line)
        self.say("hydra: stopping the server (make run exits with status 1)")
        with open(os.path.join(self.log_dir, FATAL_FILE), "a", encoding="utf-8") as f:
            f.write(line + "\n")
        return True


def _exit_status(name: str, group: str, pid: str) -> int | None:
    """How process ``pid`` of ``group:name`` exited, from supervisord's log (module doc)."""
    from supervisor import childutils

    rpc: Any = childutils.getRPCInterface(os.environ).supervisor
    try:
        status = status_in_log(rpc.readLog(-LOG_TAIL, 0), name, pid)
        if status is None:
            # Not restarted after an expected exit: its process information holds it.
            info = rpc.getProcessInfo(f"{group}:{name}")
            if info["pid"] == 0 and info["statename"] == "EXITED":
                status = int(info["exitstatus"])
        return status
    except Exception:  # noqa: BLE001 - unknown: counted as a crash, a crash loop must not hide
        return None


def _shutdown() -> None:
    from supervisor import childutils

    try:
        childutils.getRPCInterface(os.environ).supervisor.shutdown()
    except Exception as exc:  # noqa: BLE001 - report whatever went wrong, then exit
        print(f"hydra watchdog: cannot stop supervisord: {exc}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    log_dir = os.environ.get("HYDRA_LOG_DIR", ".")
    dog = Watchdog(log_dir, sys.stderr)
    stdin, stdout = sys.stdin, sys.stdout
    while True:
        stdout.write("READY\n")
        stdout.flush()
        header_line = stdin.readline()
        if not header_line:
            return 0  # supervisord went away
        header = _parse(header_line)
        body = stdin.read(int(header.get("len", "0")))
        payload_line, _, _ = body.partition("\n")
        stop = dog.handle(header.get("eventname", ""), _parse(payload_line))
        stdout.write("RESULT 2\nOK")
        stdout.flush()
        if stop:
            _shutdown()


if __name__ == "__main__":
    sys.exit(main())
