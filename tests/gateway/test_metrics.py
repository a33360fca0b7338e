"""GET /metrics: one scrape shows the writer and every gateway of a real server."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Iterator

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

import hydra
from hydra._metrics import APPEND_BUCKETS, Series
from hydra._proto import eventstore_pb2 as pb
from hydra._proto import eventstore_pb2_grpc as pb_grpc
from hydra.gateway._metered import MeteredBackend, sample
from hydra.gateway._tally import Tally
from hydra.limits import DEFAULT_LIMITS
from hydra.readers.hub import Hub
from hydra.storage.packed import pack_numbers, unpack
from hydra.storage.reads import Batched
from tests.gateway._cluster import Cluster
from tests.gateway._embedded import StoreBackend

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def scrape(url: str) -> tuple[httpx.Response, Samples]:
    # A fresh connection each time: the kernel may hand it to either gateway.
    with httpx.Client(base_url=url, timeout=10) as c:
        r = c.get("/metrics")
    assert r.status_code == 200, r.text
    return r, parse(r.text)


def flushed(url: str, before: Samples, name: str, delta: float, **labels: str) -> Samples:
    """A scrape in which ``name`` has grown by ``delta`` since ``before`` (polled: the
    other gateway's counts reach the shared files within its flush interval)."""
    deadline = time.monotonic() + 10
    while True:
        _, now = scrape(url)
        grown = value(now, name, **labels) - value(before, name, **labels)
        if grown >= delta:
            return now
        assert time.monotonic() < deadline, f"{name} grew by {grown}, not {delta}"
        time.sleep(0.05)


def test_every_gateway_answers_metrics(http: httpx.Client) -> None:
    """Embedded (series in memory), the real server, and with authentication + TLS."""
    r = http.get("/metrics")
    assert r.status_code == 200, r.text
    samples = parse(r.text)
    assert value(samples, "hydra_process_info") >= 1
    assert value(samples, "hydra_process_resident_memory_bytes") > 0


def test_one_scrape_shows_the_whole_server(cluster: Cluster) -> None:
    _, before = scrape(cluster.http_url)
    stream = f"metrics-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=cluster.http_url, timeout=10) as c:
        for i in range(5):
            r = c.post(f"/streams/{stream}", json={"eventId": f"e{i}", "data": "eA==",
                                                   "expectedVersion": -1})
            assert r.status_code == 201
        assert c.post(f"/streams/{stream}", json={"eventId": "e0", "data": "eA==",
                                                  "expectedVersion": -1}).json()["duplicate"]
        assert c.post(f"/streams/{stream}", json={"data": "eA==",
                                                  "expectedVersion": 99}).status_code == 409
        assert len(c.get(f"/streams/{stream}").text.splitlines()) == 5
        # A multi-stream append counts as one append of all its events.
        r = c.post("/append", json={"appends": [
            {"streamId": f"{stream}-a", "expectedVersion": -1, "events": [{"data": "eA=="}]},
            {"streamId": f"{stream}-b", "expectedVersion": -1, "events": [{"data": "eA=="}]}]})
        assert r.status_code == 201, r.text
        committed = c.get("/health").json()["writer"]["committedPosition"]
    with grpc.insecure_channel(cluster.grpc_target) as channel:
        stub = pb_grpc.EventStoreStub(channel)
        stub.AppendBatch(pb.AppendBatchRequest(
            stream_id=stream, expected_version=-1,
            events=[pb.NewEvent(event_id=f"g{i}", data=b"y") for i in range(3)]))
        assert len(list(stub.ReadStream(pb.ReadStreamRequest(stream_id=stream)))) == 8

    # A gateway flushes its counts into the shared files within 0.1 s (the gateway
    # that answers a scrape flushes its own first): once a scrape shows them all,
    # every scrape, whichever gateway answers, holds the other gateway's counts too.
    flushed(cluster.http_url, before, "hydra_appends_total", 9)
    flushed(cluster.http_url, before, "hydra_read_events_total", 13)
    # The writer's counts and committed position: in the files within its own
    # flush interval (hydra/writer/_tally.py).
    flushed(cluster.http_url, before, "hydra_writer_records_total", 10)
    flushed(cluster.http_url, before, "hydra_events_per_fsync_sum", 10)
    flushed(cluster.http_url, before, "hydra_committed_position",
            committed - value(before, "hydra_committed_position"))
    for _ in range(6):
        r, after = scrape(cluster.http_url)
        assert r.headers["content-type"].startswith("text/plain")

        def delta(name: str, **labels: str) -> float:
            return value(after, name, **labels) - value(before, name, **labels)  # noqa: B023

        assert delta("hydra_appends_total", api="http", outcome="ok") == 6
        assert delta("hydra_append_events_total", api="http", outcome="ok") == 7
        assert delta("hydra_appends_total", api="http", outcome="duplicate") == 1
        assert delta("hydra_appends_total", api="http", outcome="wrong_expected_version") == 1
        assert delta("hydra_appends_total", api="grpc", outcome="ok") == 1
        assert delta("hydra_append_events_total", api="grpc", outcome="ok") == 3
        assert delta("hydra_append_duration_seconds_count", api="http") == 7
        assert delta("hydra_read_requests_total", api="http", target="stream") == 1
        assert delta("hydra_read_events_total", api="http") == 5
        assert delta("hydra_read_events_total", api="grpc") == 8
        # The writer: 10 new records, made durable by fsyncs it timed.
        assert delta("hydra_writer_records_total") == 10
        assert delta("hydra_events_per_fsync_sum") == 10
        assert delta("hydra_fsync_duration_seconds_count") >= 1
        assert value(after, "hydra_committed_position") >= committed
        assert value(after, "hydra_log_segments") >= 1
        assert value(after, "hydra_log_bytes") > 0
        # Processes: the writer and both gateways, with CPU and memory each.
        names = {dict(ls)["process"]: dict(ls)["pid"] for (n, ls), v in after.items()
                 if n == "hydra_process_info"}
        assert set(names) == {"writer", "gateway-0", "gateway-1"}, names
        for name, pid in names.items():
            assert value(after, "hydra_process_resident_memory_bytes", process=name,
                         pid=pid) > 0
            assert value(after, "hydra_process_cpu_seconds_total", process=name) > 0
        for gateway in ("gateway-0", "gateway-1"):
            assert value(after, "hydra_writer_reachable", process=gateway) == 1


def clients_by_gateway(url: str, workers: int = 2) -> dict[str, httpx.Client]:
    """A keep-alive client to each gateway, by gateway name (its connection stays
    on the gateway the kernel gave it to)."""
    clients: dict[str, httpx.Client] = {}
    for _ in range(200):
        c = httpx.Client(base_url=url, timeout=10)
        name = c.get("/health").json()["worker"]
        if name in clients:
            c.close()
            continue
        clients[name] = c
        if len(clients) == workers:
            return clients
    for c in clients.values():
        c.close()
    raise AssertionError(f"reached only {sorted(clients)}")


def scrape_on(client: httpx.Client) -> Samples:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    return parse(r.text)


def append_on(client: httpx.Client, stream: str, events: int = 1) -> None:
    r = client.post(f"/streams/{stream}", json={"events": [{"data": "eA=="}] * events,
                                                "expectedVersion": -1})
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def slow_flush() -> Iterator[Cluster]:
    """A server whose gateways flush their counts on their own only every hour: what
    other gateways' scrapes see then comes from a scrape's flush or a shutdown's."""
    c = Cluster(workers=2, HYDRA_METRICS_FLUSH="3600").start()
    try:
        yield c
    finally:
        c.stop()
    assert not c.left_over and not c.ports_left


def test_a_scrape_shows_its_own_gateways_counts_at_once(slow_flush: Cluster) -> None:
    """No flush interval between an answer and the same gateway's next scrape."""
    clients = clients_by_gateway(slow_flush.http_url)
    try:
        stream = f"own-{uuid.uuid4().hex[:8]}"
        for name, c in clients.items():
            before = scrape_on(c)
            for i in range(1, 4):
                append_on(c, stream, events=2)
                assert len(c.get(f"/streams/{stream}").text.splitlines()) > 0
                now = scrape_on(c)
                for series, labels, grown in (
                    ("hydra_appends_total", {"outcome": "ok"}, i),
                    ("hydra_append_events_total", {"outcome": "ok"}, 2 * i),
                    ("hydra_append_duration_seconds_count", {}, i),
                    ("hydra_read_requests_total", {"target": "stream"}, i),
                ):
                    got = (value(now, series, api="http", **labels)
                           - value(before, series, api="http", **labels))
                    assert got == grown, (name, series, got, grown)
            assert c.get("/health").json()["worker"] == name  # still the same gateway
    finally:
        for c in clients.values():
            c.close()


def test_a_gateway_flushes_its_counts_when_it_stops(slow_flush: Cluster) -> None:
    clients = clients_by_gateway(slow_flush.http_url)
    (stopped, a), (other, b) = sorted(clients.items())
    try:
        before = scrape_on(b)
        append_on(a, f"stop-{uuid.uuid4().hex[:8]}", events=3)
        # The premise: the hour-long interval keeps the count in the first gateway.
        assert value(scrape_on(b), "hydra_appends_total") == \
            value(before, "hydra_appends_total")
        a.close()
        assert "stopped" in slow_flush.ctl("stop", f"gateway:{stopped}")
        after = scrape_on(b)  # the only gateway left
        assert value(after, "hydra_appends_total", api="http", outcome="ok") - \
            value(before, "hydra_appends_total", api="http", outcome="ok") == 1
        assert value(after, "hydra_append_events_total", api="http", outcome="ok") - \
            value(before, "hydra_append_events_total", api="http", outcome="ok") == 3
        assert value(after, "hydra_append_duration_seconds_count", api="http") - \
            value(before, "hydra_append_duration_seconds_count", api="http") == 1
    finally:
        for c in clients.values():
            c.close()
        slow_flush.ctl("start", f"gateway:{stopped}")
    slow_flush.wait_ready()


def test_other_gateways_counts_reach_a_scrape_within_the_interval(cluster: Cluster) -> None:
    """Counted by one gateway, scraped from the other: there within a bounded wait."""
    clients = clients_by_gateway(cluster.http_url)
    (_, a), (_, b) = sorted(clients.items())
    try:
        before = scrape_on(b)
        stream = f"other-{uuid.uuid4().hex[:8]}"
        append_on(a, stream, events=4)
        assert len(a.get(f"/streams/{stream}").text.splitlines()) == 4
        deadline = time.monotonic() + 10
        while True:
            now = scrape_on(b)
            grown = {n: value(now, n, api="http") - value(before, n, api="http")
                     for n in ("hydra_appends_total", "hydra_append_events_total",
                               "hydra_read_events_total")}
            if grown == {"hydra_appends_total": 1, "hydra_append_events_total": 4,
                         "hydra_read_events_total": 4}:
                break
            assert time.monotonic() < deadline, grown
            time.sleep(0.05)
    finally:
        for c in clients.values():
            c.close()


def test_subscribers_are_sampled(cluster: Cluster) -> None:
    """An open subscription shows as live within the sampling interval."""
    done = threading.Event()

    def hold() -> None:
        with httpx.Client(base_url=cluster.http_url, timeout=10) as c:
            with c.stream("GET", "/subscribe/all?from=0") as r:
                for _ in r.iter_lines():
                    if done.is_set():
                        return

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            _, now = scrape(cluster.http_url)
            if value(now, "hydra_subscribers", state="live") >= 1:
                break
            assert time.monotonic() < deadline, "the subscription never showed as live"
            time.sleep(0.3)
    finally:
        done.set()
        # Wake the reader so it sees ``done``.
        with httpx.Client(base_url=cluster.http_url, timeout=10) as c:
            c.post(f"/streams/wake-{uuid.uuid4().hex[:6]}", json={"data": "eA==",
                                                                   "expectedVersion": -1})
        thread.join(10)


# -- the pieces, in one process ------------------------------------------------------


def test_reads_are_counted_per_request(tmp_path) -> None:
    """Events of a read are counted when the read is done, with no code per event."""
    series = Series("test", None)
    with hydra.open(str(tmp_path / "d")) as store:
        for i in range(7):
            store.append("s", f"e{i}", b"x", -1)
        backend = MeteredBackend(StoreBackend(store, DEFAULT_LIMITS), "http", series)  # type: ignore[arg-type]
        assert len(list(backend.read_stream("s", None, None, False))) == 7
        assert len(list(backend.read_all(None, 3, False))) == 3
        assert list(backend.read_stream("none", None, None, False)) == []
        events = backend.read_all(None, None, False)
        next(events)  # abandoned midway: not counted
    assert series.reads.labels("http", "stream")._value.get() == 2
    assert series.reads.labels("http", "all")._value.get() == 2
    assert series.read_events.labels("http")._value.get() == 10


def test_packed_reads_count_their_events(tmp_path) -> None:
    """A read built a batch at a time yields batches; its events are counted."""
    series = Series("test", None)
    with hydra.open(str(tmp_path / "d")) as store:
        store.append_events("s", [hydra.NewEvent(b"x", f"e{i}") for i in range(300)])
        backend = MeteredBackend(StoreBackend(store, DEFAULT_LIMITS), "grpc", series)  # type: ignore[arg-type]
        batched = Batched(pack_numbers, 100, 1 << 20, 10)
        blobs = list(backend.read_stream("s", None, None, False, batched))
        assert [len(unpack(b)) for b in blobs] == [10, 20, 40, 80, 100, 50]
        assert sum(len(unpack(b)) for b in backend.read_all(None, 25, False, batched)) == 25
    assert series.reads.labels("grpc", "stream")._value.get() == 1
    assert series.reads.labels("grpc", "all")._value.get() == 1
    assert series.read_events.labels("grpc")._value.get() == 325


def test_a_slow_subscriber_counts_as_a_detach(tmp_path) -> None:
    series = Series("test", None)

    async def run() -> None:
        with hydra.open(str(tmp_path / "d")) as store:
            backend = StoreBackend(store, DEFAULT_LIMITS)
            hub = Hub(backend, buffer_events=2)  # type: ignore[arg-type]
            sub = hub.subscribe_all(0)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(sub.next(), 0.05)  # caught up: now live
            assert hub.live_subscribers == 1
            store.append_events("s", [hydra.NewEvent(b"x") for _ in range(5)], -1)
            hub.pump()  # 5 events for a queue of 2: back to reading the log
            task = asyncio.create_task(sample(series, "gw", backend, hub))  # type: ignore[arg-type]
            await asyncio.sleep(0.05)
            task.cancel()
            assert series.detaches._value.get() == 1
            assert series.subscribers.labels("catching_up")._value.get() == 1
            assert series.subscribers.labels("live")._value.get() == 0
            assert series.lag_bytes._value.get() > 0
            sub.close()
            hub.close()

    asyncio.run(run())


def test_a_flushed_histogram_equals_one_observe_per_value() -> None:
    """Bucket counts and sum, to the last bit, over several flushes; the edges of
    buckets, zero and beyond the last bucket included."""
    rng = random.Random(15)
    values = [0.0, *APPEND_BUCKETS, 7.5, 1e-9]
    values += [b * (1 + rng.uniform(-1e-12, 1e-12)) for b in APPEND_BUCKETS]
    values += [rng.expovariate(200) for _ in range(5000)]
    direct, tallied = Series("direct", None), Series("tallied", None)
    tally = Tally(tallied)
    latencies = tally.latencies("grpc")
    for i, v in enumerate(values):
        direct.append_seconds.labels("grpc").observe(v)
        latencies.append(v)
        if i % 997 == 0:
            tally.flush()
    tally.flush()
    assert not latencies

    def samples(series: Series) -> list[tuple[str, dict[str, str], float]]:
        return [(s.name, s.labels, s.value) for f in series.registry.collect()
                if f.name == "hydra_append_duration_seconds" for s in f.samples
                if not s.name.endswith("_created")]

    got, want = samples(tallied), samples(direct)
    assert got == want
    assert dict((n, v) for n, _, v in want)["hydra_append_duration_seconds_count"] == len(values)


def test_a_tally_flushes_on_a_timer_only_after_a_change(tmp_path) -> None:
    series = Series("test", None)

    async def run() -> None:
        with hydra.open(str(tmp_path / "d")) as store:
            tally = Tally(series, interval=0.01)
            backend = MeteredBackend(StoreBackend(store, DEFAULT_LIMITS), "grpc", series,  # type: ignore[arg-type]
                                     tally)
            assert tally.timer is None  # nothing counted: nothing to wake for
            await backend.append("s", [hydra.NewEvent(b"x")] * 2, -1, True)
            assert tally.timer is not None
            ok = series.appends.labels("grpc", "ok")
            while ok._value.get() == 0:  # the timer's flush, with no call of ours
                await asyncio.sleep(0.01)
            assert series.append_events.labels("grpc", "ok")._value.get() == 2
            assert tally.timer is None

    asyncio.run(run())
