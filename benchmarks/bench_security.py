"""What authentication and TLS cost per request: the same load against three servers.

    plain     no tokens file, no TLS (the default: loopback only)
    auth      HYDRA_TOKENS_FILE, bearer token on every request
    auth+tls  the same over TLS (HTTPS, gRPC over TLS), certificate made here

Each server is the repository's supervisord.conf (writer + ``--workers``
gateways, ``--sync async`` by default so the gateways, where the checks run, are
the bottleneck rather than fsync). Scenarios, each ``--runs`` times for
``--duration`` seconds, reporting medians:

    grpc-append   gRPC unary Append, h2load (appends verified by the log's growth:
                  h2load cannot see gRPC status codes, and a refused call is HTTP 200)
    http-append   HTTP POST /streams/{id}, wrk (a refusal would be a non-2xx)
    http-read     HTTP GET /streams/{id}?limit=1 of a one-event stream, wrk

TLS connections are long-lived (h2load and wrk keep them open), so the figures
are the per-request cost of encryption and of the token check, not handshakes.

Usage: python benchmarks/bench_security.py [--runs 3] [--duration 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_gateway
from bench_gateway import PAYLOAD, grpc_frame, h2load, wrk

from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc
from hydra._tokens import add_token
from tests._certs import make_certs

MODES = ("plain", "auth", "auth+tls")
SCENARIOS = ("grpc-append", "http-append", "http-read")


class Server(bench_gateway.Server):
    """bench_gateway's server, with a tokens file and a certificate as ``mode`` says."""

    def __init__(self, mode: str, workers: int, sync: str) -> None:
        self.secrets = tempfile.mkdtemp(prefix="hybk-")
        env: dict[str, str] = {}
        self.token: str | None = None
        self.ca: str | None = None
        if mode != "plain":
            tokens = os.path.join(self.secrets, "tokens")
            self.token = add_token(tokens, "bench", "admin")
            env["HYDRA_TOKENS_FILE"] = tokens
        if mode == "auth+tls":
            certs = make_certs(self.secrets)
            env.update(HYDRA_TLS_CERT=certs.cert, HYDRA_TLS_KEY=certs.key)
            self.ca = certs.ca
        super().__init__(workers, sync, "uvloop", env,
                         ssl.create_default_context(cafile=self.ca) if self.ca else True)
        self.grpc_url = f"{'https' if self.ca else 'http'}://{self.grpc}"
        self.headers = (f"authorization: Bearer {self.token}",) if self.token else ()
        self.stub = pb_grpc.EventStoreStub(self._channel())

    def _channel(self) -> grpc.Channel:
        if self.ca is None:
            return grpc.insecure_channel(self.grpc)
        with open(self.ca, "rb") as f:
            return grpc.secure_channel(self.grpc, grpc.ssl_channel_credentials(f.read()))

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def events(self) -> int:
        return int(self.stub.Health(pb.HealthRequest(), metadata=self.metadata).events)

    def stop(self) -> None:
        super().stop()
        shutil.rmtree(self.secrets, ignore_errors=True)


def scenario(name: str, server: Server, run: int, args: argparse.Namespace,
             workdir: Path) -> dict[str, Any]:
    if name == "grpc-append":
        body = workdir / "append.bin"
        body.write_bytes(grpc_frame(pb.AppendRequest(stream_id=f"bench-{run}", data=PAYLOAD,
                                                     expected_version=-1)))
        before = server.events()
        r = h2load(f"{server.grpc_url}/eventstore.EventStore/Append", body, args.clients,
                   args.streams, args.duration, workdir, server.headers)
        appended = server.events() - before
        concurrency = args.clients * args.streams
        r["verified"] = r["failed"] == 0 and r["requests"] <= appended <= r["requests"] + concurrency
        return r
    if name == "http-append":
        body = json.dumps({"data": base64.b64encode(PAYLOAD).decode(), "expectedVersion": -1})
        r = wrk(f"{server.http}/streams/bench-http-{run}", "POST", body, 2, args.connections,
                args.duration, workdir, server.headers)
    else:
        r = wrk(f"{server.http}/streams/bench-one?limit=1", "GET", None, 2, args.connections,
                args.duration, workdir, server.headers)
    r["verified"] = r["failed"] == 0
    return r


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sync", default="async")
    p.add_argument("--clients", type=int, default=8, help="h2load connections")
    p.add_argument("--streams", type=int, default=32, help="h2load streams per connection")
    p.add_argument("--connections", type=int, default=64, help="wrk connections")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    for tool in ("h2load", "wrk"):
        if shutil.which(tool) is None:
            print(f"bench_security: needs {tool} (Debian: nghttp2-client, wrk)", file=sys.stderr)
            return 2
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                              "load_before": os.getloadavg(), "results": {}}
    workdir = Path(tempfile.mkdtemp(prefix="hybs-"))
    servers: dict[str, Server] = {}
    runs: dict[str, list[dict[str, Any]]] = {f"{m} {n}": [] for m in MODES for n in SCENARIOS}
    try:
        for mode in MODES:
            servers[mode] = server = Server(mode, args.workers, args.sync)
            server.stub.Append(pb.AppendRequest(stream_id="bench-one", data=PAYLOAD,
                                                expected_version=0), metadata=server.metadata)
        # Interleaved (run 1 of every mode, then run 2, ...) so that a change in the
        # machine's load during the benchmark hits every mode alike.
        for n in range(args.runs):
            for name in SCENARIOS:
                for mode in MODES:
                    r = scenario(name, servers[mode], n, args, workdir)
                    runs[f"{mode} {name}"].append(r)
                    print(n, mode, name, round(r["per_second"]), file=sys.stderr)
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    for key, rs in runs.items():
        per_second = [r["per_second"] for r in rs]
        report["results"][key] = {
            "per_second_median": round(statistics.median(per_second)),
            "per_second_runs": [round(x) for x in per_second],
            "p50_ms_median": statistics.median(r["p50_ms"] for r in rs),
            "p99_ms_median": statistics.median(r["p99_ms"] for r in rs),
            "verified": all(r["verified"] for r in rs),
        }
    results = report["results"]
    for name in SCENARIOS:
        base = results[f"plain {name}"]["per_second_median"]
        for mode in MODES[1:]:
            r = results[f"{mode} {name}"]
            r["vs_plain"] = round(r["per_second_median"] / base, 3) if base else None
            # Extra gateway time per request, from the throughput of `workers`
            # saturated gateways: workers / rate is the CPU-seconds a request costs.
            r["extra_us_per_request"] = round(
                (args.workers / r["per_second_median"] - args.workers / base) * 1e6, 1)
    report["load_after"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
