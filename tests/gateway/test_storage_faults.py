"""Storage faults on the real server: a data directory on a small real tmpfs.

The test mounts a tmpfs of a few MiB (root only; skipped otherwise), runs
supervisord, the writer and a gateway on it, and appends until the disk is
full. Appends must then answer 507 / RESOURCE_EXHAUSTED with a message naming
the cause while the writer stays up and reads go on; once the tmpfs is made
bigger, appends succeed again by themselves and every acknowledged event is
there, in order.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
import uuid

import grpc
import httpx
import pytest

from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc

from ._cluster import BIN, Cluster

SEGMENT = 256 * 1024
EVENT = b"x" * 8000
DATA_B64 = base64.b64encode(EVENT).decode()


def _mount_tmpfs(path: str, size: str) -> None:
    os.makedirs(path, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", path],
                   check=True, capture_output=True)


@pytest.fixture
def small_disk_cluster() -> object:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    c = Cluster(workers=1, HYDRA_SEGMENT_SIZE=str(SEGMENT))
    # Logs live outside the small filesystem (they must not be what fills it).
    c.logs = os.path.join(c.root, "logs")
    c.env["HYDRA_LOG_DIR"] = c.logs
    try:
        _mount_tmpfs(c.data, "2m")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(c.root, ignore_errors=True)
        pytest.skip(f"cannot mount a tmpfs here: {exc.stderr.decode().strip()}")
    try:
        yield c.start()
    finally:
        c.stop()
        subprocess.run(["umount", "-l", c.data], check=False, capture_output=True)
        shutil.rmtree(c.root, ignore_errors=True)


def _append(http: httpx.Client, stream: str, event_id: str) -> httpx.Response:
    return http.post(f"/streams/{stream}", json={"eventId": event_id, "data": DATA_B64,
                                                 "expectedVersion": -1})


def test_full_disk_answers_507_keeps_the_writer_up_and_recovers(small_disk_cluster: Cluster) -> None:
    c = small_disk_cluster
    stream = f"full-{uuid.uuid4().hex[:8]}"
    writer_pid = c.pid_of("writer")
    acked: list[int] = []
    refusal = None
    with httpx.Client(base_url=c.http_url, timeout=10) as http:
        for n in range(2000):
            r = _append(http, stream, f"e{n}")
            if r.status_code == 507:
                refusal = r
                break
            assert r.status_code in (200, 201), r.text
            acked.append(n)
        assert refusal is not None, "a 2 MiB filesystem never filled"
        body = refusal.json()
        assert body["type"] == "storage_full", body
        assert "out of space" in body["error"] and "No space left" in body["error"], body
        assert len(acked) > 10

        # Further appends keep being refused (clearly), gRPC says RESOURCE_EXHAUSTED.
        r = _append(http, stream, "again")
        assert r.status_code == 507
        with grpc.insecure_channel(c.grpc_target) as channel:
            stub = pb_grpc.EventStoreStub(channel)
            with pytest.raises(grpc.RpcError) as err:
                stub.Append(pb.AppendRequest(stream_id=stream, expected_version=-1,
                                             event_id="g1", data=EVENT), timeout=10)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "out of space" in err.value.details()

        # Reads go on; the writer never restarted.
        r = http.get(f"/streams/{stream}", params={"limit": 10000})
        assert r.status_code == 200
        assert c.pid_of("writer") == writer_pid
        assert c.status()["writer"] == "RUNNING"

        # Space comes back: appends succeed again without any restart.
        subprocess.run(["mount", "-o", "remount,size=16m", c.data], check=True)
        deadline = time.monotonic() + 10
        while True:
            r = _append(http, stream, "after")
            if r.status_code in (200, 201) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert r.status_code in (200, 201), r.text
        assert c.pid_of("writer") == writer_pid

        # Everything acknowledged is there, in order, and nothing refused is.
        events = _read_ndjson(http, stream)
        ids = [e["eventId"] for e in events]
        assert ids == [f"e{n}" for n in acked] + ["after"]
        assert [e["version"] for e in events] == list(range(len(ids)))

    log = open(os.path.join(c.logs, "writer.log"), errors="replace").read()
    # Logged once per change of state, not once per refused request.
    assert log.count("appends refused") == 1, log[-3000:]
    assert log.count("appends accepted again") == 1, log[-3000:]
    assert "Traceback" not in log


def _read_ndjson(http: httpx.Client, stream: str) -> list[dict[str, object]]:
    import orjson

    r = http.get(f"/streams/{stream}", params={"limit": 10000})
    assert r.status_code == 200, r.text
    return [orjson.loads(line) for line in r.content.splitlines() if line.strip()]


def test_segment_cut_short_under_the_server_gives_clear_errors_not_sigbus() -> None:
    """A segment truncated under running processes: 503 for reads that would touch
    it and 507 for appends, instead of a SIGBUS that kills the gateway or writer."""
    c = Cluster(workers=1, HYDRA_SEGMENT_SIZE=str(SEGMENT)).start()
    try:
        stream = f"cut-{uuid.uuid4().hex[:8]}"
        with httpx.Client(base_url=c.http_url, timeout=10) as http:
            for n in range(80):  # about 2.5 segments
                assert _append(http, stream, f"e{n}").status_code == 201
            assert len(_read_ndjson(http, stream)) == 80
            writer_pid = c.pid_of("writer")
            gateway_pid = http.get("/health").json()["pid"]
            segments = sorted(n for n in os.listdir(c.data) if n.endswith(".log")
                              and n.startswith("hydra-"))
            assert len(segments) >= 3
            os.truncate(os.path.join(c.data, segments[0]), SEGMENT // 2)
            time.sleep(0.2)  # the processes look at the sizes every 50 ms
            r = http.get(f"/streams/{stream}")
            assert r.status_code == 503, r.text
            assert r.json()["type"] == "damaged_log"
            assert f"{segments[0]} was cut to {SEGMENT // 2} bytes" in r.json()["error"]
            r = http.get("/all")
            assert r.status_code == 503
            assert http.get("/health").status_code == 200

            # The segment being written, cut short: the writer refuses appends.
            os.truncate(os.path.join(c.data, segments[-1]), 4096)
            r = _append(http, stream, "late")
            assert r.status_code == 507, r.text
            assert r.json()["type"] == "storage_failed"
            assert f"{segments[-1]} was cut to 4096 bytes" in r.json()["error"]
            assert _append(http, stream, "later").status_code == 507
            # Nobody died of SIGBUS.
            assert c.pid_of("writer") == writer_pid
            assert http.get("/health").json()["pid"] == gateway_pid
        log = open(os.path.join(c.logs, "writer.log"), errors="replace").read()
        assert "Traceback" not in log
    finally:
        c.stop()


def test_broken_length_in_a_closed_segment_does_not_stop_the_server() -> None:
    """A broken length field in a closed segment, and the index rebuilt over it:
    the writer starts, healthy data is served, reads that touch the record answer
    503 damaged_log naming its position, and a retry of its event is a duplicate."""
    c = Cluster(workers=1, HYDRA_SEGMENT_SIZE=str(SEGMENT)).start()
    try:
        with httpx.Client(base_url=c.http_url, timeout=10) as http:
            for n in range(60):  # about 2 segments, of two streams
                assert _append(http, f"len-{n % 2}", f"e{n}").status_code == 201
            victim = _read_ndjson(http, "len-0")[3]
            position = int(victim["position"])  # type: ignore[call-overload]
            assert position < SEGMENT
        c.ctl("stop", "all")
        with open(os.path.join(c.data, "hydra-00000.log"), "r+b") as f:
            f.seek(position)
            f.write(b"\xff\xff\xff\x7f")
        shutil.rmtree(os.path.join(c.data, "index"))
        c.ctl("start", "all")
        c.wait_ready()
        with httpx.Client(base_url=c.http_url, timeout=10) as http:
            assert len(_read_ndjson(http, "len-1")) == 30
            r = http.get("/streams/len-0")
            assert r.status_code == 503, r.text
            assert r.json()["type"] == "damaged_log"
            assert f"position {position}" in r.json()["error"]
            assert http.get("/all").status_code == 503
            assert http.get("/all", params={"from": position + 1}).status_code == 200
            retry = _append(http, "len-0", str(victim["eventId"]))
            assert retry.status_code in (200, 201), retry.text
            assert retry.json()["duplicate"] and retry.json()["position"] == position
            assert _append(http, "len-0", "fresh").status_code == 201
        out = subprocess.run([str(BIN / "hydra"), "verify", c.data], capture_output=True,
                             text=True)
        assert out.returncode == 1
        assert f"hydra-00000.log position {position}: broken length field" in out.stdout
    finally:
        c.stop()


def test_a_gateway_refuses_positions_the_writer_went_back_over() -> None:
    """The log cut under a running gateway (damage before the checkpoint, then
    `hydra repair --keep-prefix` while the gateway runs): when the new writer
    announces a committed position before what the gateway served, the gateway
    answers 503 for reads reaching past it, with a log line, instead of serving
    new events at positions it had answered with other events."""
    c = Cluster(workers=1, HYDRA_SEGMENT_SIZE=str(SEGMENT)).start()
    try:
        with httpx.Client(base_url=c.http_url, timeout=10) as http:
            for n in range(20):
                assert _append(http, f"back-{n % 2}", f"e{n}").status_code == 201
            events = _read_ndjson(http, "back-0")
            cut = int(events[5]["position"])  # type: ignore[call-overload]
            c.ctl("stop", "writer")
            with open(os.path.join(c.data, "hydra-00000.log"), "r+b") as f:
                f.seek(cut + 20)
                f.write(b"\xff\xff")  # inside the record: its CRC fails
            repaired = subprocess.run([str(BIN / "hydra"), "repair", c.data, "--keep-prefix",
                                       "--yes"], capture_output=True, text=True)
            assert repaired.returncode == 0, repaired.stderr
            c.ctl("start", "writer")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                r = http.get("/streams/back-0")
                if r.status_code == 503 and "went back" in r.text:
                    break
                time.sleep(0.2)
            assert r.status_code == 503, r.text
            assert r.json()["type"] == "damaged_log"
            assert f"committed position is now {cut}" in r.json()["error"]
            # What comes before the cut is unchanged and still served.
            assert http.get("/streams/back-0", params={"limit": 5}).status_code == 200
            # New events take the positions after the cut: this gateway refuses them.
            assert _append(http, "back-2", "new").status_code == 201
            r = http.get("/all", params={"from": cut})
            assert r.status_code == 503 and "went back" in r.text
            # A stream this gateway never saw may exist in the new history: not a 404.
            r = http.get("/streams/back-2")
            assert r.status_code == 503 and "went back" in r.text
            assert http.get("/all", params={"limit": 3}).status_code == 200
        log = open(os.path.join(c.logs, "gateway-0.log"), errors="replace").read()
        assert "committed position went back from" in log and f"to {cut}" in log
        # A restarted gateway serves the new history.
        c.ctl("restart", "gateway:*")
        c.wait_ready()
        with httpx.Client(base_url=c.http_url, timeout=10) as http:
            assert [e["eventId"] for e in _read_ndjson(http, "back-2")] == ["new"]
    finally:
        c.stop()
