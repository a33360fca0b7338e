"""Where the server's CPU goes, per operation, from ``bench_gateway.py --profile DIR``.

Two profiles of the same run are combined, per process kind (writer, gateways):

- perf (every thread, native code): the share of each shared object. gRPC core
  and its Cython layer (``cygrpc``, stripped: one module), the kernel (syscalls:
  TCP, epoll, futexes, fsync), libzmq (with its I/O thread), and the C extensions
  of uvloop/asyncio, protobuf, msgpack and pyzmq are attributed directly;
- py-spy (Python frames): the interpreter's own share (libpython, libc) is split
  by the Python code that ran, by its innermost frame (asyncio, pyzmq's Python
  layer, Hydra's gateway, read side or writer, grpc.aio's Python files...).

Shares are turned into µs per operation with the server CPU per operation of
the same scenario's measured runs (``--report``: the benchmark's JSON), or of
the profiled run itself.

Usage: python benchmarks/profile_breakdown.py DIR JOB [--report gateway.json] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

# Shared object (perf) -> layer; None: interpreter time, split by py-spy.
DSO_LAYERS: tuple[tuple[re.Pattern[str], str | None], ...] = (
    (re.compile(r"cygrpc"), "gRPC core + Cython (cygrpc)"),
    (re.compile(r"kernel"), "kernel (syscalls)"),
    (re.compile(r"libzmq"), "ZeroMQ (libzmq)"),
    (re.compile(r"^loop\.|^_asyncio"), "asyncio / uvloop"),
    (re.compile(r"_message|upb|protobuf"), "protobuf"),
    (re.compile(r"msgpack|_cmsgpack"), "msgpack"),
    (re.compile(r"^_zmq|^_device|^_poll|^_proxy|^socket\.cpython|^context\."), "pyzmq"),
    (re.compile(r"libpython|^libc\.|python3|ld-linux|libm\.|\[unknown\]|_struct|"
                r"_heapq|_bisect|math|_functools|select\.|binascii|zlib|_json"), None),
)

# Python file (innermost frame, py-spy) -> layer.
PY_LAYERS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Innermost Python frame is the loop's entry: C code runs callbacks (uvloop
    # and grpc.aio's Cython), calling into the interpreter's C API.
    (re.compile(r"^run \(asyncio/runners\.py"), "loop callbacks in C (uvloop, grpc.aio)"),
    (re.compile(r"^run \(threading\.py"), "gRPC poller thread (Cython)"),
    (re.compile(r"zmq/"), "pyzmq"),
    (re.compile(r"asyncio/|uvloop"), "asyncio / uvloop"),
    (re.compile(r"grpc/|grpc_health|grpc_reflection"), "gRPC core + Cython (cygrpc)"),
    (re.compile(r"google/protobuf"), "protobuf"),
    (re.compile(r"msgpack"), "msgpack"),
    (re.compile(r"hydra/gateway/"), "Hydra gateway code"),
    (re.compile(r"hydra/readers/|hydra/_reads|hydra/_format|hydra/_index|hydra/_segments"),
     "Hydra read side"),
    (re.compile(r"hydra/writer/|hydra/_engine|hydra/_log|hydra/_protocol|hydra/_group"),
     "Hydra writer + engine"),
    (re.compile(r"starlette/|uvicorn/"), "starlette / uvicorn"),
)


def dso_layer(dso: str) -> str | None:
    for pattern, layer in DSO_LAYERS:
        if pattern.search(dso):
            return layer
    return "other native"


def py_layer(stack: str) -> str:
    frames = stack.split(";")
    leaf = frames[-1]
    for pattern, layer in PY_LAYERS:
        if pattern.search(leaf):
            return layer
    # Builtins called from somewhere: the caller's layer.
    for frame in reversed(frames[:-1]):
        for pattern, layer in PY_LAYERS:
            if pattern.search(frame):
                return layer
    return "other Python"


def perf_shares(data: Path, pids: dict[int, str]) -> dict[str, Counter[str]]:
    """kind -> layer -> samples, from perf's samples."""
    out = subprocess.run(["perf", "script", "-i", str(data), "-F", "pid,ip,dso"],
                         capture_output=True, text=True, check=True).stdout
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].isdigit():
            continue
        kind = pids.get(int(parts[0]))
        if kind is None:
            continue
        dso = parts[-1].strip("()").rsplit("/", 1)[-1]
        counts[kind][dso_layer(dso) or "interpreter"] += 1
    return counts


def pyspy_shares(files: list[Path]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for path in files:
        for line in path.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            if stack and n.isdigit():
                counts[py_layer(stack)] += int(n)
    return counts


def breakdown(directory: Path, job: str, cpu_us: dict[str, float]) -> dict[str, dict[str, float]]:
    pids = {int(k): v for k, v in json.loads((directory / f"{job}.pids.json").read_text()).items()}
    native = perf_shares(directory / f"{job}.perf.data", pids)
    result: dict[str, dict[str, float]] = {}
    for kind in ("gateway", "writer"):
        samples = native.get(kind)
        if not samples:
            continue
        total = sum(samples.values())
        python = pyspy_shares(sorted(directory.glob(f"{job}-{kind}-*.pyspy")))
        py_total = sum(python.values()) or 1
        layers: Counter[str] = Counter()
        for layer, n in samples.items():
            if layer == "interpreter":
                for py, m in python.items():
                    layers[py] += n * m / py_total
            else:
                layers[layer] += n
        per_op = cpu_us.get(kind, 0.0)
        result[kind] = {layer: round(per_op * n / total, 1) for layer, n in layers.most_common()}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("directory", type=Path)
    p.add_argument("job", help="scenario name, e.g. grpc-append or grpc-read-stream")
    p.add_argument("--report", type=Path, help="bench_gateway.py JSON: use its median CPU per op")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    cpu = json.loads((args.directory / f"{args.job}.cpu.json").read_text())
    cpu_us = {"gateway": cpu["gateway_us"], "writer": cpu["writer_us"]}
    if args.report:
        median = json.loads(args.report.read_text())["results"][args.job]["median"]
        cpu_us = {"gateway": median["gateway_cpu_us"], "writer": median["writer_cpu_us"]}
    result = breakdown(args.directory, args.job, cpu_us)
    if args.json:
        print(json.dumps({"cpu_us_per_op": cpu_us, "layers_us": result}, indent=2))
        return 0
    for kind, layers in result.items():
        print(f"{kind}: {cpu_us[kind]:.1f} µs per operation")
        for layer, us in layers.items():
            print(f"  {us:7.1f} µs  {layer}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
