"""A kill -9 loop on the real server: the writer is killed N times under load
(supervisord restarts it); after every restart every acknowledged position still
answers with the event it was acknowledged for, and no position was ever answered
with two different events (every read is compared with everything read before).

``HYDRA_TEST_KILLS`` sets N (default 2; the slow test, run with HYDRA_SLOW_TESTS=1,
runs 15)."""

from __future__ import annotations

import base64
import os
import signal
import threading
import time
import uuid

import httpx
import orjson
import pytest

from hydra._protocol import default_endpoints
from hydra.errors import Unavailable
from hydra.writer.process import request_health

from ._cluster import Cluster

# make test runs these by themselves (kill -9 under load, with deadlines a second
# worker would stretch).
pytestmark = pytest.mark.alone

THREADS = 4


def _loop(kills: int) -> None:
    c = Cluster(workers=1).start()
    try:
        _run(c, kills)
    finally:
        c.stop()


def test_kill_9_loop_never_answers_a_position_with_two_events() -> None:
    _loop(int(os.environ.get("HYDRA_TEST_KILLS", "2")))


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("HYDRA_SLOW_TESTS"),
                    reason="a long soak: HYDRA_SLOW_TESTS=1 runs it")
def test_long_kill_9_loop_never_answers_a_position_with_two_events() -> None:
    _loop(int(os.environ.get("HYDRA_TEST_KILLS", "15")))


def _run(c: Cluster, kills: int) -> None:
    command, _ = default_endpoints(c.data)
    prefix = uuid.uuid4().hex[:6]
    acked: dict[int, tuple[str, str, str]] = {}  # position -> (stream, event ID, data)
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[str] = []

    def appender(t: int) -> None:
        stream = f"kl-{prefix}-{t % 2}"
        n = 0
        with httpx.Client(base_url=c.http_url, timeout=30) as http:
            while not stop.is_set():
                eid = f"{t}-{n}"
                data = base64.b64encode(f"{eid}:{'z' * (n % 50)}".encode()).decode()
                try:
                    r = http.post(f"/streams/{stream}",
                                  json={"eventId": eid, "data": data, "expectedVersion": -1})
                except httpx.TransportError:
                    continue  # retried with the same event ID
                if r.status_code in (200, 201):
                    position = r.json()["position"]
                    with lock:
                        old = acked.setdefault(position, (stream, eid, data))
                    if old != (stream, eid, data):
                        errors.append(f"position {position} acknowledged for {old} and "
                                      f"for {(stream, eid, data)}")
                    n += 1
                elif r.status_code == 503:
                    time.sleep(0.01)  # the writer is away: retry the same event ID
                else:
                    errors.append(f"append answered {r.status_code}: {r.text}")
                    return

    seen: dict[int, tuple[str, str, str]] = {}

    def check(http: httpx.Client, when: str) -> int:
        with lock:
            expected = dict(acked)
        top = max(expected, default=-1)
        deadline = time.monotonic() + 20
        while http.get("/health").json()["committedPosition"] <= top:
            assert time.monotonic() < deadline, f"{when}: the gateway did not catch up"
            time.sleep(0.05)
        r = http.get("/all", params={"limit": 10_000_000})
        assert r.status_code == 200, f"{when}: {r.text}"
        answered = {}
        for line in r.content.splitlines():
            e = orjson.loads(line)
            answered[e["position"]] = (e["streamId"], e["eventId"], e["data"])
        for position, event in answered.items():
            before = seen.setdefault(position, event)
            assert before == event, (f"{when}: position {position} answered with {event}, "
                                     f"before with {before}")
        for position, event in expected.items():
            assert answered.get(position) == event, (
                f"{when}: acknowledged position {position} {event} answered with "
                f"{answered.get(position)}")
        return len(expected)

    threads = [threading.Thread(target=appender, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    counts = []
    try:
        with httpx.Client(base_url=c.http_url, timeout=30) as http:
            for k in range(kills):
                # supervisord counts a writer that dies within startsecs (3 s) of its
                # start as a failed start, and gives up after a few: kill only a
                # writer it calls RUNNING (appends go on meanwhile).
                deadline = time.monotonic() + 30
                while c.status().get("writer") != "RUNNING":
                    assert time.monotonic() < deadline, c.status()
                    time.sleep(0.1)
                time.sleep(0.3)
                old_pid = c.pid_of("writer")
                os.kill(old_pid, signal.SIGKILL)
                deadline = time.monotonic() + 30
                while True:
                    assert time.monotonic() < deadline, "the writer did not come back"
                    try:
                        if request_health(command, timeout=0.1)["pid"] != old_pid:
                            break
                    except Unavailable:
                        pass
                    time.sleep(0.02)
                time.sleep(0.3)  # appends flow again
                counts.append(check(http, f"after kill {k + 1}"))
    finally:
        stop.set()
        for th in threads:
            th.join(60)
    assert not errors, errors[:5]
    with httpx.Client(base_url=c.http_url, timeout=30) as http:
        counts.append(check(http, "at the end"))
    print(f"{kills} kills; acknowledged events checked after each: {counts}")
    assert counts[0] > 0 and counts[-1] > counts[0]
