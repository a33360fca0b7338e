"""``hydra stress`` options: parsed, checked and frozen before any process starts."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Protocol = Literal["grpc", "http"]
DEFAULT_TARGETS = {"grpc": "127.0.0.1:9090", "http": "http://127.0.0.1:8080"}


class OptionError(ValueError):
    """An option is out of range; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Options:
    protocol: Protocol
    target: str
    workers: int  # concurrent requests in flight, over all processes
    duration: float  # seconds of load
    pool: int  # connections, over all processes
    streams: int
    batch: int  # events per append
    event_size: int  # bytes of data per event
    read_ratio: float  # fraction of requests that are reads
    read_limit: int  # events per read
    processes: int
    cpus: tuple[int, ...]  # CPUs the load processes are pinned to (empty: any)
    timeout: float  # seconds per request
    verify: bool
    json: bool
    seed: int
    token: str | None = None  # bearer token for every request
    ca_file: str | None = None  # CA certificates (PEM) to trust; TLS for grpc
    coalesce: bool = False  # gRPC: appends made at once share AppendMany calls


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hydra stress",
        description=(
            "Load-test a running Hydra server: every request is a real append (or "
            "read), and the report gives requests, errors by kind, throughput and "
            "latency percentiles. Stops by itself after --duration."
        ),
    )
    p.add_argument("protocol", help="grpc or http")
    p.add_argument("--target", default=None,
                   help="server address (default: 127.0.0.1:9090 for grpc, "
                        "http://127.0.0.1:8080 for http)")
    p.add_argument("--workers", type=int, default=100,
                   help="requests in flight at once, over all processes (default 100)")
    p.add_argument("--duration", type=float, default=10.0,
                   help="seconds of load (default 10)")
    p.add_argument("--pool", type=int, default=10,
                   help="connections to the server, over all processes (default 10)")
    p.add_argument("--streams", type=int, default=100,
                   help="streams the load spreads over (default 100)")
    p.add_argument("--batch", type=int, default=1,
                   help="events per append; above 1, an atomic batch (default 1)")
    p.add_argument("--event-size", type=int, default=200,
                   help="bytes of data per event (default 200)")
    p.add_argument("--read-ratio", type=float, default=0.0,
                   help="fraction of requests that read a stream instead (default 0)")
    p.add_argument("--read-limit", type=int, default=10,
                   help="events per read: the stream's latest (default 10)")
    p.add_argument("--processes", type=int, default=None,
                   help="load processes, one event loop each (default: the number of "
                        "CPUs the load may use, at most --pool and --workers)")
    p.add_argument("--cpus", default="",
                   help="pin the load processes to these CPUs, e.g. '1' or '2-3,6'")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="seconds a request may take before it counts as an error (default 10)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip counting the appended events in the log afterwards")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--token", default=os.environ.get("HYDRA_TOKEN") or None,
                   help="bearer token sent with every request [HYDRA_TOKEN]")
    p.add_argument("--ca-file", default=None, metavar="PEM",
                   help="certificate authorities to trust (turns TLS on for grpc; "
                        "http follows an https:// --target)")
    p.add_argument("--coalesce", action="store_true",
                   help="gRPC: let the client coalesce appends made at the same time into "
                        "AppendMany calls, as HydraClient does (default: one Append or "
                        "AppendBatch call per request, as the Go system's tool)")
    return p


def _cpu_list(text: str) -> tuple[int, ...]:
    cpus: set[int] = set()
    for part in filter(None, text.replace(" ", "").split(",")):
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise OptionError(f"--cpus: {part!r} is not a CPU number or range") from None
        if first < 0 or last < first or last > 4095:
            raise OptionError(f"--cpus: bad range {part!r}")
        cpus.update(range(first, last + 1))
    available = os.sched_getaffinity(0)
    missing = sorted(cpus - available)
    if missing:
        raise OptionError(f"--cpus: CPUs {missing} are not available (have {sorted(available)})")
    return tuple(sorted(cpus))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise OptionError(message)


def parse(argv: Sequence[str]) -> Options:
    """Options from the command line; raises OptionError (or SystemExit from
    argparse for malformed input) with a message naming the bad option."""
    a = _parser().parse_args(list(argv))
    _check(a.protocol in DEFAULT_TARGETS,
           f"unknown protocol {a.protocol!r}: use grpc or http")
    target = a.target or DEFAULT_TARGETS[a.protocol]
    if a.protocol == "http":
        _check(target.startswith(("http://", "https://")),
               f"--target for http is http://host:port, got {target!r}")
    else:
        _check("://" not in target.removeprefix("grpc://"),
               f"--target for grpc is host:port, got {target!r}")
    _check(1 <= a.workers <= 100_000, f"--workers must be in [1, 100000], got {a.workers}")
    _check(0 < a.duration <= 86_400, f"--duration must be seconds in (0, 86400], got {a.duration}")
    _check(1 <= a.pool <= 4096, f"--pool must be in [1, 4096], got {a.pool}")
    _check(1 <= a.streams <= 10_000_000, f"--streams must be in [1, 10000000], got {a.streams}")
    _check(1 <= a.batch <= 10_000, f"--batch must be in [1, 10000], got {a.batch}")
    _check(0 <= a.event_size <= 1 << 20,
           f"--event-size must be bytes in [0, 1048576], got {a.event_size}")
    _check(0.0 <= a.read_ratio <= 1.0, f"--read-ratio must be in [0, 1], got {a.read_ratio}")
    _check(1 <= a.read_limit <= 100_000, f"--read-limit must be in [1, 100000], got {a.read_limit}")
    _check(0 < a.timeout <= 3600, f"--timeout must be seconds in (0, 3600], got {a.timeout}")
    cpus = _cpu_list(a.cpus)
    usable = len(cpus) or len(os.sched_getaffinity(0))
    processes = a.processes
    if processes is None:
        processes = max(1, min(usable, a.pool, a.workers))
    _check(1 <= processes <= 256, f"--processes must be in [1, 256], got {processes}")
    _check(processes <= a.pool,
           f"--processes ({processes}) must not exceed --pool ({a.pool}): "
           "each process needs a connection of its own")
    _check(processes <= a.workers,
           f"--processes ({processes}) must not exceed --workers ({a.workers})")
    _check(not a.coalesce or a.protocol == "grpc", "--coalesce is for grpc only")
    return Options(a.protocol, target, a.workers, a.duration, a.pool, a.streams, a.batch,
                   a.event_size, a.read_ratio, a.read_limit, processes, cpus, a.timeout,
                   a.verify, a.json, a.seed, a.token, a.ca_file, a.coalesce)


def share(total: int, parts: int, n: int) -> int:
    """Part ``n`` of ``total`` split as evenly as possible into ``parts``."""
    return total // parts + (1 if n < total % parts else 0)

