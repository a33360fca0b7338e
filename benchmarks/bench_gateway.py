"""Benchmark the server: writer + N gateways under supervisord, driven by h2load / wrk.

Starts the repository's supervisord.conf (as `make run` does) on free ports in a
temporary directory, then measures, each for ``--runs`` runs of ``--duration``
seconds, and reports medians:

    grpc-append       gRPC unary Append, 256 concurrent streams (h2load)
    http-append       HTTP POST /streams/{id}, 64 connections (wrk)
    grpc-read-stream  gRPC ReadStream of 1,000-event streams (h2load)
    http-read-all     HTTP GET /all NDJSON, 10,000 events a request (wrk)

Throughput is per second; latency p50/p99 is per request (for reads: the whole
1,000 / 10,000-event response). The load generators are C programs (Debian
packages `nghttp2-client` for h2load and `wrk`), so they are not the bottleneck.
h2load cannot see gRPC status codes (they travel in trailers), so the append
scenarios check afterwards that the log grew by exactly the number of requests.

With ``--floor`` the two gRPC scenarios also run against bare grpc.aio servers
(same worker count, same options, no Hydra: Append answers a constant, ReadStream
sends 1,000 pre-serialized events): the most grpc.aio itself can do here.

Usage: python benchmarks/bench_gateway.py [--runs 3] [--duration 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc

BIN = Path(sys.executable).parent
SCENARIOS = ("grpc-append", "http-append", "grpc-read-stream", "http-read-all")
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
        data = os.path.join(self.root, "data")
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
    return {"requests": len(ok), "failed": len(done) - len(ok),
            "per_second": len(ok) / duration, **percentiles(ok), "h2load": out.splitlines()[-12:]}


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


def run_scenario(name: str, server: Server, stub: pb_grpc.EventStoreStub, run: int,
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
    if name == "grpc-read-stream":
        body = workdir / "read.bin"
        body.write_bytes(grpc_frame(pb.ReadStreamRequest(stream_id=f"bench-read-{run % 4}")))
        r = h2load(f"http://{server.grpc}/eventstore.EventStore/ReadStream", body,
                   args.grpc_read_clients, args.grpc_read_streams, args.duration, workdir)
        r["per_second"] *= READ_STREAM_EVENTS
        r["unit"] = "events"
        r["verified"] = r["failed"] == 0
        return r
    if name == "http-read-all":
        r = wrk(f"{server.http}/all?limit={READ_ALL_LIMIT}", "GET", None, args.wrk_threads,
                args.http_read_connections, args.duration, workdir)
        r["per_second"] *= READ_ALL_LIMIT
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
    """A bare grpc.aio server: the per-call and per-message cost of gRPC alone."""
    import asyncio

    import uvloop

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
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1),
                                          ("grpc.max_concurrent_streams", 1024)])
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "eventstore.EventStore", {
                "Append": grpc.unary_unary_rpc_method_handler(append),
                "ReadStream": grpc.unary_stream_rpc_method_handler(read_stream),
            }),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def run_floor(args: argparse.Namespace, report: dict[str, Any]) -> None:
    port = free_port()
    procs = [subprocess.Popen([sys.executable, __file__, "--serve-floor", str(port)])
             for _ in range(args.workers)]
    try:
        time.sleep(2)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            cases = {
                "grpc-floor-append": (
                    "Append", pb.AppendRequest(stream_id="x", data=PAYLOAD, expected_version=-1),
                    args.grpc_append_clients, args.grpc_append_streams, 1),
                "grpc-floor-read-stream": (
                    "ReadStream", pb.ReadStreamRequest(stream_id="bench-read-0"),
                    args.grpc_read_clients, args.grpc_read_streams, READ_STREAM_EVENTS),
            }
            for name, (method, request, clients, streams, per_call) in cases.items():
                body = work / "floor.bin"
                body.write_bytes(grpc_frame(request))
                runs = []
                for _ in range(args.runs):
                    r = h2load(f"http://127.0.0.1:{port}/eventstore.EventStore/{method}", body,
                               clients, streams, args.duration, work)
                    r.pop("h2load", None)
                    r["per_second"] *= per_call
                    runs.append(r)
                    print(f"{name}: {r['per_second']:,.0f}/s p50 {r['p50_ms']} ms "
                          f"p99 {r['p99_ms']} ms", file=sys.stderr)
                report["results"][name] = {"runs": runs, "median": {
                    "per_second": round(statistics.median(r["per_second"] for r in runs)),
                    "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                    "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                }}
    finally:
        for p in procs:
            p.terminate()
            p.wait(10)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", action="append", choices=SCENARIOS,
                   help="run only these (repeatable; default all)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=10.0, help="seconds per run")
    p.add_argument("--workers", type=int, default=2, help="gateway workers")
    p.add_argument("--sync", default="every-write")
    p.add_argument("--loop", default="uvloop", choices=("uvloop", "asyncio"))
    p.add_argument("--grpc-append-clients", type=int, default=8)
    p.add_argument("--grpc-append-streams", type=int, default=32,
                   help="streams per connection (clients x streams = concurrency, 256)")
    p.add_argument("--http-append-connections", type=int, default=64)
    p.add_argument("--grpc-read-clients", type=int, default=4)
    p.add_argument("--grpc-read-streams", type=int, default=2)
    p.add_argument("--http-read-connections", type=int, default=4)
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--floor", action="store_true",
                   help="also measure bare grpc.aio servers with the same gRPC loads")
    p.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, help="write the JSON report here (default stdout)")
    args = p.parse_args(argv)
    if args.serve_floor:
        serve_floor(args.serve_floor)
        return 0
    for tool in ("h2load", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install -y nghttp2-client wrk", file=sys.stderr)
            return 2
    scenarios = args.scenario or list(SCENARIOS)
    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "loadavg_before": os.getloadavg()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": {},
    }
    server = Server(args.workers, args.sync, args.loop)
    try:
        with grpc.insecure_channel(server.grpc) as channel, \
                tempfile.TemporaryDirectory() as tmp:
            stub = pb_grpc.EventStoreStub(channel)
            populate(stub)
            for name in scenarios:
                runs = []
                for run in range(args.runs):
                    r = run_scenario(name, server, stub, run, args, Path(tmp))
                    r.pop("h2load", None)
                    runs.append(r)
                    print(f"{name} run {run + 1}: {r['per_second']:,.0f} {r['unit']}/s "
                          f"p50 {r['p50_ms']} ms p99 {r['p99_ms']} ms"
                          f"{'' if r['verified'] else '  (NOT VERIFIED)'}", file=sys.stderr)
                report["results"][name] = {
                    "runs": runs,
                    "median": {
                        "per_second": round(statistics.median(r["per_second"] for r in runs)),
                        "unit": runs[0]["unit"],
                        "p50_ms": statistics.median(r["p50_ms"] for r in runs),
                        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
                        "all_verified": all(r["verified"] for r in runs),
                    },
                }
    finally:
        server.stop()
    if args.floor:
        run_floor(args, report)
    report["machine"]["loadavg_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
