"""Persistent index benchmarks (issue 10 targets). Not collected by pytest.

Usage::

    python benchmarks/bench_index.py build   [--events 10000000 --streams 1000000]
    python benchmarks/bench_index.py rebuild [--runs 1]
    python benchmarks/bench_index.py start   [--runs 3]

``build`` writes a store of ``--events`` 200-byte events over ``--streams``
streams (each event has an event ID; streams are interleaved, so every group of
appends touches many streams) straight into segment files (the fastest path; the
bytes are exactly what the writer writes), and caches it in ``--store``
(default /tmp/hydra-bench-index-<events>). ``rebuild`` deletes the index and
times the full rebuild from the log (events/s; CPU seconds of the rebuilding
process and of its worker). ``start`` times, on that store:
a writer process ready after a clean stop; ready after kill -9 during a load
(the tail to index); a gateway ready (answers a read); and the private
(anonymous) RSS of the writer and of the gateway. Every figure is the median of
``--runs``; results go to stdout and, with ``--json``, to a file.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import hydra
from hydra._child import child_env, python_command
from hydra.storage.format import FLAG_BATCH_END, encode_event
from hydra.storage.manifest import FORMAT_VERSION, Manifest, write_manifest
from hydra.storage.segments import segment_name

EVENT_SIZE = 200
SEGMENT = 64 << 20
PRIME = 7919  # spreads consecutive events over the streams


def build(directory: str, events: int, streams: int) -> None:
    """Write ``events`` events round-robin (permuted) over ``streams`` streams."""
    if os.path.exists(os.path.join(directory, "built")):
        print(f"using the cached store {directory}", flush=True)
        return
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory)
    write_manifest(directory, Manifest(FORMAT_VERSION, SEGMENT))
    data = b"d" * EVENT_SIZE
    started = time.monotonic()
    number = 0
    buf = bytearray()
    names = [f"stream-{i}".encode() for i in range(streams)]
    for i in range(events):
        s = (i * PRIME) % streams
        record = encode_event(names[s], b"%016x" % i, b"Bench", b"", data, i // streams,
                              1_700_000_000_000_000 + i, FLAG_BATCH_END)
        if len(buf) + len(record) > SEGMENT:
            _write_segment(directory, number, buf)
            number += 1
            buf = bytearray()
        buf += record
        if i % 1_000_000 == 999_999:
            print(f"  {i + 1} events written ({(i + 1) / (time.monotonic() - started):.0f}/s)",
                  flush=True)
    _write_segment(directory, number, buf)
    open(os.path.join(directory, "built"), "w").close()
    print(f"built {events} events in {streams} streams, {number + 1} segments, "
          f"{time.monotonic() - started:.1f} s", flush=True)


def _write_segment(directory: str, number: int, buf: bytearray) -> None:
    path = os.path.join(directory, segment_name(number))
    with open(path, "wb") as f:
        f.write(buf)
        f.truncate(SEGMENT)


def rebuild(directory: str) -> dict[str, float]:
    """Delete the index and time the writer's full rebuild from the log (wall clock
    and this process's CPU time, less sensitive to a loaded machine), and the
    private memory the process keeps after it."""
    shutil.rmtree(os.path.join(directory, "index"), ignore_errors=True)
    started = time.monotonic()
    cpu = time.process_time()
    children = _children_cpu()
    with hydra.open(directory) as s:
        took = time.monotonic() - started
        cpu = time.process_time() - cpu
        children = _children_cpu() - children
        events = s.stats()["events"]
        anon = anon_rss_mib(os.getpid())
    return {"events": events, "seconds": round(took, 2), "events_per_s": round(events / took),
            "cpu_seconds": round(cpu, 2), "events_per_cpu_s": round(events / cpu),
            "worker_cpu_seconds": round(children, 2),
            "anon_rss_after_mib": round(anon, 1), "load_average": os.getloadavg()[0]}


def _children_cpu() -> float:
    """CPU seconds of this process's ended children (the rebuild's worker)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def anon_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no RssAnon")


def start_writer(directory: str) -> tuple[subprocess.Popen[bytes], float]:
    """Start ``hydra writer``; return it and the seconds until it answered health."""
    from hydra.writer.process import request_health

    command = f"ipc://{directory}/run/cmd.sock"
    started = time.monotonic()
    proc = subprocess.Popen(python_command("hydra", "writer", "--data", directory),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env())
    while True:
        try:
            request_health(command, timeout=0.05)
            return proc, time.monotonic() - started
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "") from None
            time.sleep(0.005)


def load(command: str, seconds: float, streams: int) -> int:
    """Append single events to random streams for ``seconds`` (256 in flight)."""
    import asyncio
    import random

    from hydra.writer.client import WriterClient

    async def main() -> int:
        done = 0
        stop = time.monotonic() + seconds
        async with WriterClient(command, timeout=2.0) as c:
            async def worker(n: int) -> None:
                nonlocal done
                rng = random.Random(n)
                while time.monotonic() < stop:
                    try:
                        await c.append(f"stream-{rng.randrange(streams)}",
                                       [hydra.NewEvent(b"l" * EVENT_SIZE, f"load-{n}-{done}")])
                        done += 1
                    except hydra.HydraError:
                        return
            await asyncio.gather(*(worker(n) for n in range(256)))
        return done

    return asyncio.run(main())


def start_gateway(directory: str, port: int) -> tuple[subprocess.Popen[bytes], float]:
    """Start a gateway; return it and the seconds until it answered a stream read."""
    started = time.monotonic()
    proc = subprocess.Popen(python_command("hydra", "gateway", "--data", directory,
                                           "--http-port", str(port), "--grpc-port", str(port + 1)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=child_env())
    url = f"http://127.0.0.1:{port}/streams/stream-7?limit=5"
    while True:
        try:
            with urllib.request.urlopen(url, timeout=0.2) as r:
                body = r.read()
            if body:
                return proc, time.monotonic() - started
        except Exception:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else "") from None
            time.sleep(0.005)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    proc.send_signal(sig)
    proc.wait(60)


def bench_start(directory: str, runs: int, streams: int) -> dict[str, object]:
    out: dict[str, list[float]] = {k: [] for k in (
        "writer_ready_clean_s", "writer_ready_after_kill_s", "gateway_ready_s",
        "writer_anon_rss_mib", "writer_anon_rss_under_load_mib", "gateway_anon_rss_mib",
        "load_events")}
    for _ in range(runs):
        w, ready = start_writer(directory)
        out["writer_ready_clean_s"].append(ready)
        out["writer_anon_rss_mib"].append(anon_rss_mib(w.pid))
        g, gready = start_gateway(directory, 18480)
        out["gateway_ready_s"].append(gready)
        # Some reads, so the gateway's RSS includes what serving costs.
        for k in range(200):
            urllib.request.urlopen(
                f"http://127.0.0.1:18480/streams/stream-{k * 4999 % streams}").read()
        urllib.request.urlopen("http://127.0.0.1:18480/all?limit=1000").read()
        out["gateway_anon_rss_mib"].append(anon_rss_mib(g.pid))
        stop(g)
        # kill -9 during a load, then time the restart (it indexes the tail).
        t = threading.Thread(target=lambda: out["load_events"].append(
            load(f"ipc://{directory}/run/cmd.sock", 3.0, streams)))
        t.start()
        time.sleep(2.0)
        out["writer_anon_rss_under_load_mib"].append(anon_rss_mib(w.pid))
        stop(w, signal.SIGKILL)
        t.join()
        w, ready = start_writer(directory)
        out["writer_ready_after_kill_s"].append(ready)
        stop(w)
    result: dict[str, object] = {k: round(statistics.median(v), 3) for k, v in out.items() if v}
    result["all"] = {k: [round(x, 3) for x in v] for k, v in out.items()}
    return result


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["build", "rebuild", "start"])
    p.add_argument("--events", type=int, default=10_000_000)
    p.add_argument("--streams", type=int, default=1_000_000)
    p.add_argument("--store", default=None, help="the cached store's directory")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", help="also write the results here")
    a = p.parse_args()
    if a.events < 1 or a.streams < 1 or a.runs < 1:
        p.error("--events, --streams and --runs must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    store = a.store or f"/tmp/hydra-bench-index-{a.events}"
    build(store, a.events, a.streams)
    result: dict[str, object] = {"events": a.events, "streams": a.streams,
                                 "load_average": os.getloadavg()}
    if a.what == "rebuild":
        runs = [rebuild(store) for _ in range(a.runs)]
        result["rebuild"] = runs
        result["rebuild_events_per_s"] = statistics.median(r["events_per_s"] for r in runs)
    elif a.what == "start":
        if not os.path.exists(os.path.join(store, "index")):
            result["rebuild"] = rebuild(store)
        result.update(bench_start(store, a.runs, a.streams))
    print(json.dumps(result, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
