"""Prometheus metrics of every Hydra process, and one scrape for the whole server.

Mode: prometheus_client's *multiprocess mode*. The writer and every gateway keep
their series in small memory-mapped files in ``DATA/run/metrics/`` (one file per
process and metric kind, private to the user like the rest of ``run/``); the
gateway that answers ``GET /metrics`` reads them all, so one scrape, whichever
gateway the kernel gives it to, shows the writer and every gateway. It needs no
new message between processes and keeps working while the writer is down (its
last values stay, and ``hydra_writer_reachable`` says so).

Counters and histograms of dead processes stay in the sums (totals do not drop
when a gateway restarts); gauges count only live processes (``live*`` modes;
each process removes the gauge files of dead processes when it starts). Process
CPU and memory come from the library's process collector, run at scrape time
for each live process of the server (``hydra_process_*{process, pid}``).

Hot-path cost: a counter ``inc`` is about 2 µs and a histogram ``observe`` 4.5 µs
in this mode, so no process writes them per operation: the gateways count per
request into plain ints (``hydra.gateway._tally``), written here at most every
0.1 s and before their own scrapes; the writer counts its groups, records, fsyncs
and committed position the same way (``hydra.writer._tally``), written from its
loop at most every 0.1 s and when it stops. A process that never called
``start()`` (an embedded gateway in a test) gets the same series in memory,
exposed for that process.

``HYDRA_METRICS=off`` in a process's environment turns it all off there: the
series become no-ops, nothing is written to ``run/metrics/`` and the gateways
do not wrap their backends (the benchmark's "without metrics").
"""

from __future__ import annotations

import functools
import operator
import os
import re
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any, Final

from hydra._protocol import ERROR_CODES, run_dir

METRICS_DIR: Final = "metrics"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# Append acknowledgement time (gateway: request in to reply out), in seconds.
APPEND_BUCKETS: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
                         1.0, 2.0, 5.0)
FSYNC_BUCKETS: Final = (0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
                        0.1, 0.2, 0.5, 1.0)
EVENTS_PER_FSYNC_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000,
                                   10000, 50000)

_FILE = re.compile(r"_(\d+)\.db$")


def metrics_dir(data_dir: str | os.PathLike[str]) -> str:
    """Where the processes of the server at ``data_dir`` keep their series."""
    return os.path.join(run_dir(data_dir), METRICS_DIR)


def outcome(exc: BaseException) -> str:
    """The ``outcome`` label of a failed request: the writer protocol's error code."""
    for code, cls in ERROR_CODES:
        if isinstance(exc, cls):
            return code
    return "internal"


def enabled() -> bool:
    """False when ``HYDRA_METRICS`` says off (raises InvalidArgument on a bad value)."""
    from hydra.cli import parse_flag

    return parse_flag(os.environ.get("HYDRA_METRICS", "on"), "HYDRA_METRICS")


class _Off:
    """A metric that counts nothing (``HYDRA_METRICS=off``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def labels(self, *args: Any) -> _Off:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, value: float) -> None:
        pass


class Series:
    """Every series of Hydra, created once per process (``series()``)."""

    def __init__(self, process: str, directory: str | None, on: bool = True) -> None:
        from prometheus_client import CollectorRegistry

        if on:
            from prometheus_client import Counter, Gauge, Histogram
        else:
            Counter = Gauge = Histogram = _Off  # type: ignore[misc, assignment]  # noqa: N806
        self.on = on
        self.process = process
        self.directory = directory
        # In multiprocess mode the values live in files and this registry is unused;
        # in memory it is what ``exposition()`` shows.
        reg = self.registry = CollectorRegistry(auto_describe=False)

        # -- gateways ----------------------------------------------------------
        self.appends = Counter(
            "hydra_appends", "Append requests answered, by API and outcome (ok, duplicate, "
            "or the error code)", ["api", "outcome"], registry=reg)
        self.append_events = Counter(
            "hydra_append_events", "Events in the append requests answered, by API and "
            "outcome", ["api", "outcome"], registry=reg)
        self.append_seconds = Histogram(
            "hydra_append_duration_seconds", "Time from an append request's arrival at a "
            "gateway to its acknowledgement (successful appends)", ["api"],
            buckets=APPEND_BUCKETS, registry=reg)
        self.deletes = Counter("hydra_deletes", "Stream deletions answered, by API and "
                               "outcome", ["api", "outcome"], registry=reg)
        self.reads = Counter("hydra_read_requests", "Read requests (stream or all), by API",
                             ["api", "target"], registry=reg)
        self.read_events = Counter("hydra_read_events", "Events returned by read requests, "
                                   "by API", ["api"], registry=reg)
        self.subscribers = Gauge("hydra_subscribers", "Open subscriptions, live or catching "
                                 "up from the log", ["state"], multiprocess_mode="livesum",
                                 registry=reg)
        self.lag_events = Gauge(
            "hydra_subscriber_lag_events", "Largest lag of a subscriber in events: queued "
            "for a live one, behind the stream's end for a catching-up stream subscriber",
            multiprocess_mode="livemax", registry=reg)
        self.lag_bytes = Gauge(
            "hydra_subscriber_lag_bytes", "Largest distance of an all-streams subscriber "
            "behind the committed position, in log bytes", multiprocess_mode="livemax",
            registry=reg)
        self.detaches = Counter(
            "hydra_subscriber_detaches", "Times a live subscriber's buffer filled and it "
            "fell back to reading the log (slow consumer)", registry=reg)
        self.writer_reachable = Gauge(
            "hydra_writer_reachable", "1 while the gateway hears the writer's feed (a "
            "message within the last 3 s), else 0", ["process"], multiprocess_mode="liveall",
            registry=reg)
        self.gateway_position = Gauge(
            "hydra_gateway_committed_position", "The committed position a gateway's read "
            "side has reached", ["process"], multiprocess_mode="liveall", registry=reg)

        # -- the writer --------------------------------------------------------
        self.committed = Gauge("hydra_committed_position", "The writer's committed log "
                               "position", multiprocess_mode="livemax", registry=reg)
        self.log_bytes = Gauge("hydra_log_bytes", "Disk space of the log's segment files "
                               "(allocated blocks)", multiprocess_mode="livemax", registry=reg)
        self.log_segments = Gauge("hydra_log_segments", "Segment files of the log",
                                  multiprocess_mode="livemax", registry=reg)
        self.written = Counter("hydra_writer_records", "Records written to the log (events "
                               "and tombstones; duplicates write nothing)", registry=reg)
        self.groups = Counter("hydra_writer_groups", "Group commits (turns of the writer "
                              "that handled requests)", registry=reg)
        self.fsync_seconds = Histogram("hydra_fsync_duration_seconds", "Duration of the "
                                       "writer's fsyncs of the log", buckets=FSYNC_BUCKETS,
                                       registry=reg)
        self.events_per_fsync = Histogram(
            "hydra_events_per_fsync", "Records made durable by one fsync",
            buckets=EVENTS_PER_FSYNC_BUCKETS, registry=reg)
        self.fsync_failures = Counter("hydra_fsync_failures", "fsyncs of the log that "
                                      "failed (the writer then stops)", registry=reg)

        # Scavenging (the writer's scavenger thread; sampled every heartbeat).
        self.scavenge_running = Gauge("hydra_scavenge_running", "1 while a scavenge runs",
                                      multiprocess_mode="livemax", registry=reg)
        self.scavenge_segment = Gauge("hydra_scavenge_segment", "The segment the running "
                                      "scavenge is at (1-based; of hydra_scavenge_segments)",
                                      multiprocess_mode="livemax", registry=reg)
        self.scavenge_segments = Gauge("hydra_scavenge_segments", "Closed segments the "
                                       "running (or last) scavenge scans",
                                       multiprocess_mode="livemax", registry=reg)
        self.scavenge_reclaimed = Gauge("hydra_scavenge_reclaimed_bytes", "Disk bytes the "
                                        "running (or last) scavenge gave back so far",
                                        multiprocess_mode="livemax", registry=reg)
        self.scavenge_runs = Gauge("hydra_scavenge_runs", "Scavenges finished since the "
                                   "writer started", multiprocess_mode="livemax", registry=reg)

        # -- every process -----------------------------------------------------
        self.info = Gauge("hydra_process_info", "One per live process of the server",
                          ["process"], multiprocess_mode="liveall", registry=reg)
        self.info.labels(process).set(1)


# Serialises the read-modify-write of a histogram's sum across the tallies of one
# process (embedded gateways in test threads share the process's series).
_sum_lock = threading.Lock()


def replay(child: Any, observed: list[float]) -> None:
    """What ``child.observe(v)`` for each ``v`` of ``observed``, in order, would do to a
    prometheus_client histogram child, with one write per bucket touched and one for
    the sum (the library has no call to observe many values at once)."""
    # observe() counts v in the first bucket whose bound is >= v (the bounds are
    # ascending and end with +Inf); the loops over ``observed`` run in C.
    counts = Counter(map(functools.partial(bisect_left, child._upper_bounds), observed))
    with _sum_lock:
        # Added one by one, left to right, as observe() would (not sum(), which
        # compensates rounding from Python 3.12 on).
        child._sum.set(functools.reduce(operator.add, observed, child._sum.get()))
    buckets = child._buckets
    for i, n in counts.items():
        buckets[i].inc(n)


_lock = threading.Lock()
_series: Series | None = None


def start(process: str, directory: str) -> Series:
    """Keep this process's series in ``directory`` (multiprocess mode), as ``process``.

    Call once, early, in a server process; later calls return the same series.
    """
    global _series
    with _lock:
        if _series is not None:
            return _series
        if not enabled():
            _series = Series(process, None, on=False)
            return _series
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        from prometheus_client import values
        from prometheus_client.multiprocess import mark_process_dead

        # Chosen at import from the variable; set it here too in case something
        # imported prometheus_client before the directory was known.
        values.ValueClass = values.MultiProcessValue()
        for pid in _pids(directory):
            # A dead process's gauges must not count, nor those of an earlier
            # process that had this PID.
            if pid == os.getpid() or not _alive(pid):
                mark_process_dead(pid, directory)
        _series = Series(process, directory)
        return _series


def series() -> Series:
    """This process's series (kept in memory when ``start()`` was never called)."""
    global _series
    if _series is None:
        with _lock:
            if _series is None:
                _series = Series(f"pid-{os.getpid()}", None, on=enabled())
    return _series


def exposition() -> bytes:
    """The Prometheus text of the whole server (or of this process in memory mode)."""
    from prometheus_client import CollectorRegistry, generate_latest

    s = series()
    if not s.on:
        return b"# metrics are off in this gateway (HYDRA_METRICS=off)\n"
    if s.directory is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Server(s.registry.collect, s.directory))
        return generate_latest(registry)
    from prometheus_client.multiprocess import MultiProcessCollector

    # A fresh registry per scrape, as the library's multiprocess mode asks.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Server(MultiProcessCollector(None, s.directory).collect, s.directory))
    return generate_latest(registry)


class _Server:
    """The collected series, plus the process collector's series for each live
    process named by ``hydra_process_info``."""

    def __init__(self, collect: Any, directory: str | None) -> None:
        self._collect = collect
        self._directory = directory

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import Metric
        from prometheus_client.process_collector import ProcessCollector

        processes: dict[int, str] = {}
        for family in self._collect():
            if family.name == "hydra_process_info":
                kept = []
                for s in family.samples:
                    pid = int(s.labels.get("pid", os.getpid()))
                    if s.value and _alive(pid):
                        processes[pid] = s.labels["process"]
                        kept.append(s)
                family.samples = kept
            yield family
        merged: dict[str, Any] = {}
        for pid, name in sorted(processes.items()):
            collector = ProcessCollector(namespace="hydra", pid=functools.partial(int, pid),
                                         registry=None)
            for family in collector.collect():
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(family.name, family.documentation,
                                                       family.type)
                for s in family.samples:
                    out.add_sample(s.name, {**s.labels, "process": name, "pid": str(pid)},
                                   s.value)
        yield from merged.values()


def _pids(directory: str) -> Iterable[int]:
    pids = set()
    for name in os.listdir(directory):
        m = _FILE.search(name)
        if m:
            pids.add(int(m.group(1)))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process (never ours): treat as alive
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b") ", 1)[1][:1] != b"Z"
    except (OSError, IndexError):
        return False
