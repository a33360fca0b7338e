"""Benchmark the server: writer + N gateways under supervisord, driven by h2load / wrk.

Starts the repository's supervisord.conf (as `make run` does) on free ports in a
temporary directory, then measures, each for ``--runs`` runs of ``--duration``
seconds, and reports medians:

    grpc-append       gRPC unary Append, 64 in flight (8 connections x 8 streams, h2load)
    http-append       HTTP POST /streams/{id}, 64 connections (wrk)
    grpc-read-stream  gRPC ReadStream of 1,000-event streams, 8 in flight (h2load)
    http-read-all     HTTP GET /all NDJSON, 10,000 events a request (wrk)

Throughput is per second; latency p50/p99 is per request (for reads: the whole
1,000 / 10,000-event response). The load generators are C programs (Debian
packages `nghttp2-client` for h2load and `wrk`), so they are not the bottleneck.
h2load cannot see gRPC status codes (they travel in trailers), so the append
scenarios check afterwards that the log grew by exactly the number of requests.

With ``--floor`` the gRPC scenarios also run against bare grpc.aio servers
(same worker count, same options, no Hydra: Append answers a constant, ReadStream
sends 1,000 pre-serialized events): the most grpc.aio itself can do here. The
floor's run sits beside its scenario's in every round (before it in even rounds,
after it in odd ones), and each ratio is given as the median of the per-round
ratios as well as the ratio of the medians.

Usage: python benchmarks/bench_gateway.py [--runs 3] [--duration 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import grpc
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc

BIN = Path(sys.executable).parent
SCENARIOS = ("grpc-append", "http-append", "grpc-read-stream", "grpc-read-all", "http-read-all")
SYNC_MODES = ("every-write", "async", "every-second")
PAYLOAD = b'{"account":"acc-0001","amount":125,"currency":"EUR","note":"benchmark event"}' * 1
READ_STREAM_EVENTS = 1000
READ_ALL_LIMIT = 10_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """supervisord.conf with one writer and ``workers`` gateways in a temp directory."""

    def __init__(self, workers: int, sync: str, loop: str,
                 extra_env: dict[str, str] | None = None, verify: Any = True) -> None:
        self.root = tempfile.mkdtemp(prefix="hyb-", dir="/tmp")
        data = self.data = os.path.join(self.root, "data")
        self.logs = os.path.join(data, "logs")
        os.makedirs(self.logs)
        self.http_port, self.grpc_port = free_port(), free_port()
        self.workers = workers
        self.verify = verify  # httpx's verify= (a TLS server's CA)
        self.env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "HYDRA_DATA": data, "HYDRA_LOG_DIR": self.logs,
                    "HYDRA_WORKERS": str(workers), "HYDRA_SYNC": sync, "HYDRA_LOOP": loop,
                    "HYDRA_HTTP_PORT": str(self.http_port),
                    "HYDRA_GRPC_PORT": str(self.grpc_port), "HYDRA_LOG_LEVEL": "warning",
                    **(extra_env or {})}
        scheme = "https" if "HYDRA_TLS_CERT" in self.env else "http"
        self.proc = subprocess.Popen(
            [str(BIN / "supervisord"), "-c", str(ROOT / "supervisord.conf")],
            env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.http = f"{scheme}://127.0.0.1:{self.http_port}"
        self.grpc = f"127.0.0.1:{self.grpc_port}"
        self._wait_ready()

    def _wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        seen: set[int] = set()
        while time.monotonic() < deadline:
            try:
                with httpx.Client(base_url=self.http, timeout=2, verify=self.verify) as c:
                    doc = c.get("/health").json()
                if doc["status"] == "ok":
                    seen.add(doc["pid"])
                if len(seen) == self.workers:
                    return
            except (httpx.HTTPError, ValueError):
                time.sleep(0.1)
        raise RuntimeError(f"server not ready; logs in {self.logs}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


def grpc_frame(message: Any) -> bytes:
    body = message.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


def percentiles(latencies_us: list[float]) -> dict[str, float]:
    if not latencies_us:
        return {"p50_ms": float("nan"), "p99_ms": float("nan")}
    q = statistics.quantiles(latencies_us, n=100, method="inclusive")
    return {"p50_ms": round(q[49] / 1000, 2), "p99_ms": round(q[98] / 1000, 2)}


def h2load(url: str, body: Path, clients: int, streams: int, duration: float,
           workdir: Path, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run h2load against a gRPC method; return succeeded requests, rate and latencies."""
    log = workdir / "h2load.log"
    log.unlink(missing_ok=True)
    cmd = ["h2load", "-D", str(round(duration)), "-c", str(clients), "-m", str(streams),
           "-t", "1", "-d", str(body), "-H", "content-type: application/grpc",
           "-H", "te: trailers", *(x for h in headers for x in ("-H", h)),
           "--log-file", str(log), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    done = [line.split("\t") for line in log.read_text().splitlines() if line]
    ok = [float(d[2]) for d in done if d[1] == "200"]
    traffic = re.search(r"\((\d+)\) data", out)
    data = int(traffic.group(1)) if traffic else 0
    return {"requests": len(ok), "failed": len(done) - len(ok),
            "per_second": len(ok) / duration, **percentiles(ok),
            "bytes_per_request": round(data / max(len(done), 1)),
            "h2load": out.splitlines()[-12:]}


WRK_SCRIPT = """
wrk.method = "%(method)s"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
%(headers)s
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests": %%d, "non2xx": %%d, "errors": %%d, ' ..
    '"duration_us": %%d, "p50_us": %%f, "p99_us": %%f}\\n', summary.requests,
    summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, summary.duration,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url: str, method: str, body: str | None, threads: int, connections: int,
        duration: float, workdir: Path, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    script = workdir / "bench.lua"
    extra = "\n".join(f"wrk.headers[{json.dumps(h.split(': ', 1)[0])}] = "
                       f"{json.dumps(h.split(': ', 1)[1])}" for h in headers)
    script.write_text(WRK_SCRIPT % {"method": method, "headers": extra,
                                    "body": "nil" if body is None else json.dumps(body)})
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{round(duration)}s",
           "--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    doc = json.loads(line[len("RESULT "):])
    good = doc["requests"] - doc["non2xx"] - doc["errors"]
    seconds = doc["duration_us"] / 1e6
    return {"requests": good, "failed": doc["non2xx"] + doc["errors"],
            "per_second": good / seconds, "p50_ms": round(doc["p50_us"] / 1000, 2),
            "p99_ms": round(doc["p99_us"] / 1000, 2)}


def event_count(stub: pb_grpc.EventStoreStub) -> int:
    return int(stub.Health(pb.HealthRequest()).events)


def _appends_verified(r: dict[str, Any], concurrency: int) -> bool:
    """Every counted request appended an event. Requests still in flight when the
    load generator stops its clock are appended but not counted: at most one per
    concurrent request."""
    return r["failed"] == 0 and r["requests"] <= r["appended"] <= r["requests"] + concurrency


def _server_pids(server: Server) -> dict[int, str]:
    """The writer and gateway processes of a server: pid -> "writer" / "gateway"."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(") ", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server.proc.pid:
            out[int(entry)] = "writer" if b"writer" in argv else "gateway"
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all threads."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_per_op(before: dict[int, float], pids: dict[int, str], ops: int) -> dict[str, float]:
    """Server CPU per operation (µs), per process kind, from /proc times."""
    used: dict[str, float] = {"writer": 0.0, "gateway": 0.0}
    for pid, kind in pids.items():
        used[kind] += cpu_seconds(pid) - before[pid]
    per = {f"{k}_us": round(v / max(ops, 1) * 1e6, 1) for k, v in used.items()}
    per["total_us"] = round(sum(used.values()) / max(ops, 1) * 1e6, 1)
    per["cores"] = round(sum(used.values()), 2)
    return per


def run_scenario(name: str, server: Server, stub: pb_grpc.EventStoreStub, run: int,
                 args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    pids = _server_pids(server)
    stats = _writer_stats(server)
    before = {pid: cpu_seconds(pid) for pid in pids}
    r = _run_load(name, server, stub, run, args, workdir)
    ops = r["requests"] * r.get("per_request", 1)
    r["server_cpu"] = _cpu_per_op(before, pids, ops)
    r["server_cpu"]["cores"] = round(r["server_cpu"]["cores"] / args.duration, 2)
    after = _writer_stats(server)
    groups = after["groups"] - stats["groups"]
    r["writer"] = {"requests_per_group": round((after["requests"] - stats["requests"])
                                               / max(groups, 1), 1),
                   "groups_per_s": round(groups / args.duration),
                   "fsyncs_per_s": round((after["fsyncs"] - stats["fsyncs"]) / args.duration)}
    return r


def _writer_stats(server: Server) -> dict[str, int]:
    """The writer's request, group and fsync counters (its own health op)."""
    from hydra._protocol import default_endpoints
    from hydra.writer.process import request_health

    return request_health(default_endpoints(server.data)[0], timeout=5.0)


def _run_load(name: str, server: Server, stub: pb_grpc.EventStoreStub, run: int,
              args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    if name == "grpc-append":
        body = workdir / "append.bin"
        body.write_bytes(grpc_frame(pb.AppendRequest(
            stream_id=f"bench-grpc-append-{run}", data=PAYLOAD, expected_version=-1)))
        before = event_count(stub)
        r = h2load(f"http://{server.grpc}/eventstore.EventStore/Append", body,
                   args.grpc_append_clients, args.grpc_append_streams, args.duration, workdir)
        r["appended"] = event_count(stub) - before
        r["verified"] = _appends_verified(r, args.grpc_append_clients * args.grpc_append_streams)
        r["unit"] = "appends"
        return r
    if name == "http-append":
        body = json.dumps({"data": __import__("base64").b64encode(PAYLOAD).decode(),
                           "expectedVersion": -1})
        before = event_count(stub)
        r = wrk(f"{server.http}/streams/bench-http-append-{run}", "POST", body,
                args.wrk_threads, args.http_append_connections, args.duration, workdir)
        r["appended"] = event_count(stub) - before
        r["verified"] = _appends_verified(r, args.http_append_connections)
        r["unit"] = "appends"
        return r
    if name in ("grpc-read-stream", "grpc-read-all"):
        body = workdir / "read.bin"
        if name == "grpc-read-stream":
            method = "ReadStream"
            body.write_bytes(grpc_frame(pb.ReadStreamRequest(stream_id=f"bench-read-{run % 4}")))
        else:
            # The Go system's ReadAll reads to the end; field 2 (limit, an
            # extension) keeps every response at READ_STREAM_EVENTS events.
            method = "ReadAll"
            body.write_bytes(grpc_frame(pb.ReadAllRequest(
                from_position=1 + run * 7919, limit=READ_STREAM_EVENTS)))
        r = h2load(f"http://{server.grpc}/eventstore.EventStore/{method}", body,
                   args.grpc_read_clients, args.grpc_read_streams, args.duration, workdir)
        r["per_second"] *= READ_STREAM_EVENTS
        r["per_request"] = READ_STREAM_EVENTS
        r["unit"] = "events"
        # Every response carried all its events (h2load counts the bytes).
        r["verified"] = r["failed"] == 0 and r["bytes_per_request"] >= READ_STREAM_EVENTS * len(PAYLOAD)
        return r
    if name == "http-read-all":
        r = wrk(f"{server.http}/all?limit={READ_ALL_LIMIT}", "GET", None, args.wrk_threads,
                args.http_read_connections, args.duration, workdir)
        r["per_second"] *= READ_ALL_LIMIT
        r["per_request"] = READ_ALL_LIMIT
        r["unit"] = "events"
        r["verified"] = r["failed"] == 0
        return r
    raise ValueError(name)


def populate(stub: pb_grpc.EventStoreStub) -> None:
    """Four 1,000-event streams to read, and enough events for /all reads."""
    for s in range(4):
        stub.AppendBatch(pb.AppendBatchRequest(
            stream_id=f"bench-read-{s}", expected_version=0,
            events=[pb.NewEvent(data=PAYLOAD, event_type="Bench", event_id=f"e{i}")
                    for i in range(READ_STREAM_EVENTS)]))
    while event_count(stub) < 2 * READ_ALL_LIMIT:
        stub.AppendBatch(pb.AppendBatchRequest(
            stream_id="bench-fill", expected_version=-1,
            events=[pb.NewEvent(data=PAYLOAD, event_type="Bench") for _ in range(1000)]))


def serve_floor(port: int) -> None:
    """A bare grpc.aio server: the per-call and per-message cost of gRPC alone,
    with the gateway's own server options."""
    import asyncio

    import uvloop

    from hydra.gateway._server import grpc_options
    from hydra.gateway.config import GatewayConfig

    event = pb.Event(position=123456, stream_id="bench-read-0", version=1, data=PAYLOAD,
                     event_type="Bench", event_id="e1",
                     timestamp_us=1_700_000_000_000_000).SerializeToString()
    reply = pb.AppendResponse(position=1, version=2, committed_position=3).SerializeToString()

    async def append(request: bytes, context: Any) -> bytes:
        return reply

    async def read_stream(request: bytes, context: Any) -> Any:
        for _ in range(READ_STREAM_EVENTS):
            yield event

    async def main() -> None:
        # A gateway's default configuration (the data directory is never opened).
        config = GatewayConfig.from_args([], {"HYDRA_DATA": "/nonexistent"})
        server = grpc.aio.server(options=grpc_options(config))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "eventstore.EventStore", {
                "Append": grpc.unary_unary_rpc_method_handler(append),
                "ReadStream": grpc.unary_stream_rpc_method_handler(read_stream),
                "ReadAll": grpc.unary_stream_rpc_method_handler(read_stream),
            }),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


FLOOR_OF = {"grpc-append": "grpc-floor-append", "grpc-read-stream": "grpc-floor-stream",
            "grpc-read-all": "grpc-floor-stream"}


def _floor_load(method: str, body: Path, clients: int, streams: int, per_call: int,
                port: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    r = h2load(f"http://127.0.0.1:{port}/eventstore.EventStore/{method}", body,
               clients, streams, args.duration, work)
    r["per_request"] = per_call
    return r


class Floor:
    """The bare grpc.aio servers (``--workers`` processes on one port), up for the
    whole benchmark so that each round measures them right beside the scenarios."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.port = free_port()
        self.procs = [subprocess.Popen([sys.executable, __file__, "--serve-floor",
                                        str(self.port)]) for _ in range(args.workers)]
        time.sleep(2)
        self.cases = {
            "grpc-floor-append": (
                "Append", pb.AppendRequest(stream_id="x", data=PAYLOAD, expected_version=-1),
                args.grpc_append_clients, args.grpc_append_streams, 1),
            "grpc-floor-stream": (
                "ReadStream", pb.ReadStreamRequest(stream_id="bench-read-0"),
                args.grpc_read_clients, args.grpc_read_streams, READ_STREAM_EVENTS),
        }
        for name, (_, request, *_rest) in self.cases.items():
            (work / f"{name}.bin").write_bytes(grpc_frame(request))

    def load(self, name: str) -> Callable[[], dict[str, Any]]:
        method, _, clients, streams, per_call = self.cases[name]
        return functools.partial(_floor_load, method, self.work / f"{name}.bin", clients,
                                 streams, per_call, self.port, self.args, self.work)

    def run(self, name: str) -> dict[str, Any]:
        per_call = self.cases[name][4]
        before = {p.pid: cpu_seconds(p.pid) for p in self.procs}
        r = self.load(name)()
        used = sum(cpu_seconds(p.pid) - before[p.pid] for p in self.procs)
        r["server_cpu"] = {"total_us": round(used / max(r["requests"] * per_call, 1) * 1e6, 1),
                           "cores": round(used / self.args.duration, 2)}
        r.pop("h2load", None)
        r["per_second"] *= per_call
        print(f"{name}: {r['per_second']:,.0f}/s p50 {r['p50_ms']} ms "
              f"p99 {r['p99_ms']} ms cpu {r['server_cpu']['total_us']} us/op", file=sys.stderr)
        return r

    def profile(self) -> None:
        for name in self.cases:
            profile(name, {p.pid: "gateway" for p in self.procs}, self.load(name), self.args)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
            p.wait(10)


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    med: dict[str, Any] = {
        "per_second": round(statistics.median(r["per_second"] for r in runs)),
        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "server_cpu_us": statistics.median(r["server_cpu"]["total_us"] for r in runs),
    }
    if "unit" in runs[0]:
        med["unit"] = runs[0]["unit"]
        med["all_verified"] = all(r["verified"] for r in runs)
    if "writer_us" in runs[0]["server_cpu"]:
        med["writer_cpu_us"] = statistics.median(r["server_cpu"]["writer_us"] for r in runs)
        med["gateway_cpu_us"] = statistics.median(r["server_cpu"]["gateway_us"] for r in runs)
    return med


def profile(job: str, pids: dict[int, str], load: Callable[[], dict[str, Any]],
            args: argparse.Namespace) -> None:
    """One extra run of ``load`` (not counted) under perf (every thread, native
    frames: which shared object spends the CPU) and py-spy (which Python code);
    ``benchmarks/profile_breakdown.py DIR JOB`` sums them up."""
    out = args.profile
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{job}.pids.json").write_text(json.dumps({str(k): v for k, v in pids.items()}))
    seconds = max(2, round(args.duration) - 2)
    spies = [subprocess.Popen(
        [str(BIN / "py-spy"), "record", "--nonblocking", "-r", "500", "-d", str(seconds),
         "-f", "raw", "-o", str(out / f"{job}-{kind}-{pid}.pyspy"), "-p", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for pid, kind in sorted(pids.items())]
    perf = subprocess.Popen(
        ["perf", "record", "-q", "-F", "999", "-o", str(out / f"{job}.perf.data"),
         "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    before = {pid: cpu_seconds(pid) for pid in pids}
    r = load()
    cpu = _cpu_per_op(before, pids, r["requests"] * r.get("per_request", 1))
    (out / f"{job}.cpu.json").write_text(json.dumps(cpu))
    for p in [*spies, perf]:
        p.wait(60)
    print(f"{job}: profiles in {out}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", action="append", choices=SCENARIOS,
                   help="run only these (repeatable; default all)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--workers", type=int, default=2, help="gateway workers")
    p.add_argument("--sync", action="append", choices=SYNC_MODES,
                   help="durability modes for grpc-append, each on a server of its own "
                        "(repeatable; default all three; other scenarios use the first)")
    p.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    p.add_argument("--grpc-append-clients", type=int, default=8)
    p.add_argument("--grpc-append-streams", type=int, default=8,
                   help="streams per connection (clients x streams = concurrency, 64)")
    p.add_argument("--http-append-connections", type=int, default=64)
    p.add_argument("--grpc-read-clients", type=int, default=4)
    p.add_argument("--grpc-read-streams", type=int, default=2)
    p.add_argument("--http-read-connections", type=int, default=4)
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--floor", action="store_true",
                   help="also measure bare grpc.aio servers with the same gRPC loads")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="one extra run per scenario under py-spy --native and perf, "
                        "profiles written to DIR")
    p.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help="write the JSON report here (default stdout)")
    args = p.parse_args(argv)
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return 0
    for tool in ("h2load", "wrk") + (("perf",) if args.profile else ()):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install -y nghttp2-client wrk linux-perf",
                  file=sys.stderr)
            return 2
    scenarios = args.scenario or list(SCENARIOS)
    modes = args.sync or list(SYNC_MODES)
    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "loadavg_before": os.getloadavg()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": {},
    }
    jobs: list[tuple[str, str]] = []  # (result name, sync mode)
    for name in scenarios:
        if name == "grpc-append":
            jobs += [(name if m == "every-write" else f"{name}-{m}", m) for m in modes]
        else:
            jobs.append((name, modes[0]))
    servers: dict[str, Server] = {}
    stubs: dict[str, pb_grpc.EventStoreStub] = {}
    channels = []
    floor: Floor | None = None
    # With --floor, each round runs the floor's load beside each gRPC scenario
    # (before it in even rounds, after it in odd ones): "{job} floor" holds the
    # floor runs paired with that job's, round by round.
    paired = {job: FLOOR_OF[job] for job, _ in jobs if args.floor and job in FLOOR_OF}
    try:
        for mode in dict.fromkeys(m for _, m in jobs):
            servers[mode] = Server(args.workers, mode, args.loop)
            channels.append(grpc.insecure_channel(servers[mode].grpc))
            stubs[mode] = pb_grpc.EventStoreStub(channels[-1])
            populate(stubs[mode])
        with tempfile.TemporaryDirectory() as tmp:
            if paired:
                floor = Floor(args, Path(tmp))
            runs: dict[str, list[dict[str, Any]]] = {job: [] for job, _ in jobs}
            runs.update({f"{job} floor": [] for job in paired})
            # Runs interleave across scenarios and modes, so that a change in the
            # machine's other load affects them alike.
            for run in range(args.runs):
                for job, mode in jobs:
                    name = "grpc-append" if job.startswith("grpc-append") else job
                    if floor is not None and job in paired and run % 2 == 0:
                        runs[f"{job} floor"].append(floor.run(paired[job]))
                    r = run_scenario(name, servers[mode], stubs[mode], run, args, Path(tmp))
                    r.pop("h2load", None)
                    r["sync"] = mode
                    runs[job].append(r)
                    print(f"{job} run {run + 1}: {r['per_second']:,.0f} {r['unit']}/s "
                          f"p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms, server CPU "
                          f"{r['server_cpu']['total_us']} us/{r['unit'][:-1]} "
                          f"(writer {r['server_cpu']['writer_us']}, gateways "
                          f"{r['server_cpu']['gateway_us']}; {r['server_cpu']['cores']} cores; "
                          f"{r['writer']['requests_per_group']} requests/group)"
                          f"{'' if r['verified'] else '  (NOT VERIFIED)'}", file=sys.stderr)
                    if floor is not None and job in paired and run % 2 == 1:
                        runs[f"{job} floor"].append(floor.run(paired[job]))
            for job in runs:
                report["results"][job] = {"runs": runs[job], "median": _median(runs[job])}
            if args.profile:
                for job, mode in jobs:
                    name = "grpc-append" if job.startswith("grpc-append") else job
                    profile(job, _server_pids(servers[mode]), functools.partial(
                        _run_load, name, servers[mode], stubs[mode], 99, args, Path(tmp)), args)
                if floor is not None:
                    floor.profile()
    finally:
        if floor is not None:
            floor.stop()
        for channel in channels:
            channel.close()
        for server in servers.values():
            server.stop()
    results = report["results"]
    ratios: dict[str, Any] = {}

    def ratio(job: str, base: str) -> None:
        """Median of the per-round ratios (the pair measured minutes apart at
        most), and the ratio of the medians."""
        rounds = [a["per_second"] / b["per_second"]
                  for a, b in zip(results[job]["runs"], results[base]["runs"])]
        ratios[f"{job} / {base}"] = {
            "median_of_rounds": round(statistics.median(rounds), 3),
            "rounds": [round(x, 3) for x in rounds],
            "of_medians": round(results[job]["median"]["per_second"]
                                / results[base]["median"]["per_second"], 3)}

    for job in paired:
        ratio(job, f"{job} floor")
    for job, _ in jobs:
        if job.startswith("grpc-append-") and "grpc-append" in results:
            ratio(job, "grpc-append")
    report["ratios"] = ratios
    for key, value in ratios.items():
        print(f"{key}: {value}", file=sys.stderr)
    report["machine"]["loadavg_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
