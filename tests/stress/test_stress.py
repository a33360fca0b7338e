"""``hydra stress``: flags are checked, a short bounded run against the real
server stops by itself, and its report adds up."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hydra.stress import main
from hydra.stress._histogram import SIZE, Histogram, bucket_of, upper_edge
from hydra.stress._options import parse

HYDRA = str(Path(sys.executable).parent / "hydra")


@pytest.mark.parametrize("argv, words", [
    (["udp"], "unknown protocol"),
    (["grpc", "--workers", "0"], "--workers"),
    (["grpc", "--workers", "-5"], "--workers"),
    (["grpc", "--duration", "-1"], "--duration"),
    (["grpc", "--duration", "0"], "--duration"),
    (["grpc", "--duration", "nan"], "--duration"),
    (["grpc", "--read-ratio", "1.5"], "--read-ratio"),
    (["grpc", "--read-ratio", "-0.1"], "--read-ratio"),
    (["grpc", "--pool", "0"], "--pool"),
    (["grpc", "--streams", "0"], "--streams"),
    (["grpc", "--batch", "0"], "--batch"),
    (["grpc", "--event-size", "-1"], "--event-size"),
    (["grpc", "--event-size", str((1 << 20) + 1)], "--event-size"),
    (["grpc", "--timeout", "0"], "--timeout"),
    (["grpc", "--pool", "2", "--processes", "3"], "--processes"),
    (["grpc", "--workers", "1", "--processes", "2"], "--processes"),
    (["grpc", "--cpus", "4096"], "--cpus"),
    (["grpc", "--cpus", "x"], "--cpus"),
    (["grpc", "--target", "http://127.0.0.1:1"], "--target"),
    (["http", "--target", "127.0.0.1:1"], "--target"),
    (["http", "--coalesce"], "--coalesce"),
])
def test_bad_flags_exit_2_with_a_message(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("hydra stress: ") and words in err


def test_malformed_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["grpc", "--workers", "many"])
    assert info.value.code == 2
    assert "--workers" in capsys.readouterr().err


def test_defaults_and_sharing():
    opts = parse(["http"])
    assert opts.target == "http://127.0.0.1:8080" and opts.read_ratio == 0
    assert 1 <= opts.processes <= len(os.sched_getaffinity(0))
    assert parse(["grpc", "--workers", "1"]).processes == 1
    assert parse(["grpc", "--cpus", "0"]).cpus == (0,)


def test_histogram_merges_exactly_and_errs_high_by_under_2_percent():
    rnd = random.Random(7)
    samples = [rnd.lognormvariate(-6, 1.5) for _ in range(20_000)]  # seconds
    parts = [Histogram() for _ in range(4)]
    whole = Histogram()
    for i, s in enumerate(samples):
        parts[i % 4].record(s)
        whole.record(s)
    merged = Histogram()
    for p in parts:
        merged.merge(p)
    assert merged == whole
    exact = sorted(int(s * 1_000_000) for s in samples)
    for q in (0.5, 0.9, 0.99, 0.999, 1.0):
        truth = exact[math.ceil(q * len(exact)) - 1]
        got = merged.percentile_us(q)
        assert truth <= got <= truth * 1.016 + 1, q
    assert merged.max_us == exact[-1] and merged.min_us == exact[0]
    assert bucket_of(0) == 0 and upper_edge(SIZE - 1) >= 2**46


def run_stress(*args: str, timeout: float = 90) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    out = subprocess.run([HYDRA, "stress", *args], capture_output=True, text=True, check=False,
                         timeout=timeout)
    return out, time.monotonic() - started


def check_report(r: dict, duration: float) -> None:
    """The report's numbers agree with each other."""
    assert r["requests"] == r["ok"] + r["errors"] == r["appends"] + r["reads"]
    assert r["errors"] == sum(r["errors_by_kind"].values())
    lat = r["latency_ms"]
    assert lat["all"]["count"] == r["ok"]
    assert lat["append"]["count"] + lat["read"]["count"] == r["ok"]
    assert r["events_appended"] == lat["append"]["count"] * r["batch"]
    for kind in ("all", "append", "read"):
        s = lat[kind]
        if s["count"]:
            assert 0 <= s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= s["max"]
            assert s["min"] <= s["mean"] <= s["max"]
    assert duration <= r["elapsed"] < duration + r["latency_ms"]["all"]["max"] / 1000 + 1
    assert math.isclose(r["throughput"]["requests_per_s"], r["requests"] / r["elapsed"],
                        rel_tol=0.01)
    assert r["verified"]["events_in_log"] == r["verified"]["events_acknowledged"]
    assert r["verified"]["events_acknowledged"] == r["events_appended"]


def test_grpc_run_is_bounded_and_adds_up(cluster):
    out, took = run_stress("grpc", "--target", cluster.grpc_target, "--workers", "40",
                           "--duration", "2", "--pool", "4", "--streams", "10", "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    check_report(r, 2)
    assert r["errors"] == 0, r["errors_by_kind"]
    assert (r["protocol"], r["workers"], r["pool"], r["reads"]) == ("grpc", 40, 4, 0)
    assert r["appends"] > 100
    assert took < 20  # it stopped by itself


def test_http_run_with_reads_and_batches_adds_up(cluster):
    out, _ = run_stress("http", "--target", cluster.http_url, "--workers", "30",
                        "--duration", "2", "--pool", "4", "--batch", "3",
                        "--read-ratio", "0.3", "--event-size", "50", "--processes", "2",
                        "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    check_report(r, 2)
    assert r["errors"] == 0, r["errors_by_kind"]
    assert r["reads"] > 10 and r["appends"] > 10 and r["events_read"] > 0
    assert r["processes"] == 2


def test_grpc_coalesced_run_adds_up(cluster):
    out, _ = run_stress("grpc", "--target", cluster.grpc_target, "--workers", "40",
                        "--duration", "1", "--pool", "2", "--streams", "5", "--coalesce",
                        "--json")
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    check_report(r, 1)
    assert r["errors"] == 0 and r["coalesce"] is True


def test_text_report(cluster):
    out, _ = run_stress("grpc", "--target", cluster.grpc_target, "--workers", "4",
                        "--duration", "0.5", "--pool", "2")
    assert out.returncode == 0, out.stderr
    for word in ("requests", "errors", "throughput", "p50", "p99", "verified", "all found"):
        assert word in out.stdout


def test_unreachable_server_fails_clearly():
    from tests.gateway._cluster import free_port

    out, took = run_stress("grpc", "--target", f"127.0.0.1:{free_port()}", "--duration", "1",
                           "--timeout", "1", "--workers", "2", "--pool", "2")
    assert out.returncode == 1
    assert "cannot reach the grpc server" in out.stderr
    assert took < 30


def test_progress_line_every_second(cluster):
    out, _ = run_stress("grpc", "--target", cluster.grpc_target, "--workers", "8",
                        "--duration", "3.5", "--pool", "2", "--json")
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("hydra stress: ")]
    assert len(lines) >= 3, out.stderr
    seconds = [float(line.split()[2]) for line in lines]
    assert all(0 < b - a <= 1.3 for a, b in zip([0.0, *seconds], seconds)), seconds
    assert all(" ok (" in line and "errors" in line for line in lines)
    json.loads(out.stdout)  # the report on stdout stays clean JSON


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_with_token_and_tls(protocol, secure_cluster):
    secure = secure_cluster
    target = secure.grpc_target if protocol == "grpc" else secure.http_url
    common = ("--target", target, "--workers", "4", "--duration", "1", "--pool", "2",
              "--ca-file", secure.certs.ca, "--json")
    out, _ = run_stress(protocol, *common, "--token", secure.tokens["write"])
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["errors"] == 0 and r["appends"] > 0
    out, _ = run_stress(protocol, *common)  # no token: refused before the load starts
    assert out.returncode == 1
    assert "Unauthenticated" in out.stderr or "bearer token" in out.stderr, out.stderr
