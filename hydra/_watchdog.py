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
The listener's stderr is supervisord's console (``stderr_logfile=/dev/stderr``);
its stdout is the event protocol and carries nothing else.
"""

from __future__ import annotations

import os
import sys
import time
from collections import defaultdict, deque
from typing import TextIO
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


def _parse(line: str) -> dict[str, str]:
    return dict(token.split(":", 1) for token in line.split() if ":" in token)


class Watchdog:
    def __init__(self, log_dir: str, console: TextIO,
                 exit_status: Callable[[str], int] | None = None) -> None:
        self.log_dir = log_dir
        self.console = console
        # "group:name" -> the exit status supervisord recorded (-1: killed by a signal)
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
        if event == "PROCESS_STATE_EXITED" and payload.get("expected") == "1":
            # supervisord.conf lists CANNOT_START and BAD_OPTIONS as the programs'
            # `exitcodes` and restarts only on other ones, so the status is still there.
            group = payload.get("groupname", name)
            if self.exit_status(f"{group}:{name}") in (CANNOT_START, BAD_OPTIONS):
                return self.fatal(f"hydra: {name} cannot start: {reason(self.log_dir, name)}")
            return False
        if event == "PROCESS_STATE_EXITED" and payload.get("expected") == "0":
            group = payload.get("groupname", name)
            if self.exit_status(f"{group}:{name}") <= 0:
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


def _exit_status(process: str) -> int:
    from supervisor import childutils

    try:
        info = childutils.getRPCInterface(os.environ).supervisor.getProcessInfo(process)
        return int(info["exitstatus"])
    except Exception:  # noqa: BLE001 - unknown: count it, a crash loop must not hide
        return 1


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
