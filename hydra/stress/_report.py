"""The stress report: tallies of every process merged, as JSON or text.

The counts add up by construction, and the report says so in a form a test (or
a script) can check: requests = ok + errors = appends + reads; errors =
sum of errors by kind; latency counts = ok requests per kind.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from hydra.stress._histogram import Histogram
from hydra.stress._options import Options
from hydra.stress._worker import Tally


def merge(tallies: list[Tally]) -> Tally:
    total = Tally(started=min(t.started for t in tallies),
                  finished=max(t.finished for t in tallies))
    errors: Counter[str] = Counter()
    for t in tallies:
        total.appends += t.appends
        total.reads += t.reads
        total.ok += t.ok
        total.events_appended += t.events_appended
        total.events_read += t.events_read
        total.cpu_seconds += t.cpu_seconds
        errors.update(t.errors)
        total.append_latency.merge(t.append_latency)
        total.read_latency.merge(t.read_latency)
    total.errors = errors
    return total


def build(opts: Options, tally: Tally, run_id: str,
          verified: dict[str, int] | None) -> dict[str, Any]:
    elapsed = max(tally.finished - tally.started, 1e-9)
    requests = tally.appends + tally.reads
    both = Histogram()
    both.merge(tally.append_latency)
    both.merge(tally.read_latency)
    return {
        "protocol": opts.protocol,
        "target": opts.target,
        "run_id": run_id,
        "workers": opts.workers,
        "processes": opts.processes,
        "pool": opts.pool,
        "streams": opts.streams,
        "batch": opts.batch,
        "event_size": opts.event_size,
        "read_ratio": opts.read_ratio,
        "coalesce": opts.coalesce,
        "duration": opts.duration,
        "elapsed": round(elapsed, 3),
        "requests": requests,
        "ok": tally.ok,
        "errors": sum(tally.errors.values()),
        "errors_by_kind": dict(sorted(tally.errors.items())),
        "appends": tally.appends,
        "reads": tally.reads,
        "events_appended": tally.events_appended,
        "events_read": tally.events_read,
        "throughput": {
            "requests_per_s": round(requests / elapsed, 1),
            "ok_per_s": round(tally.ok / elapsed, 1),
            "events_appended_per_s": round(tally.events_appended / elapsed, 1),
        },
        "latency_ms": {
            "all": both.summary_ms(),
            "append": tally.append_latency.summary_ms(),
            "read": tally.read_latency.summary_ms(),
        },
        # CPU the load processes used, in percent of one core: near 100 per
        # process means the load generator, not the server, set the pace.
        "load_cpu_percent": round(100 * tally.cpu_seconds / elapsed, 1),
        "verified": verified,
    }


def text(r: dict[str, Any]) -> str:
    lines = [
        (f"hydra stress {r['protocol']} {r['target']}: {r['workers']} workers in "
        f"{r['processes']} processes over {r['pool']} connections, {r['duration']:g} s"),
        (f"  {r['streams']} streams, batch {r['batch']}, events of {r['event_size']} B, "
        f"read ratio {r['read_ratio']:g}"),
        "",
        f"  requests     {r['requests']:>10}   ({r['appends']} appends, {r['reads']} reads)",
        f"  ok           {r['ok']:>10}",
        f"  errors       {r['errors']:>10}"
        + "".join(f"   {kind}: {n}" for kind, n in r["errors_by_kind"].items()),
        f"  elapsed      {r['elapsed']:>10.3f} s",
        (f"  throughput   {r['throughput']['requests_per_s']:>10.1f} req/s   "
        f"{r['throughput']['events_appended_per_s']:.1f} events appended/s"),
    ]
    lines.append(f"  load CPU     {r['load_cpu_percent']:>10.1f} % of one core, over "
                 f"{r['processes']} processes")
    head = "  latency ms  "
    for kind in ("all", "append", "read"):
        s = r["latency_ms"][kind]
        if not s["count"] or (kind != "all" and not (r["appends"] and r["reads"])):
            continue
        lines.append(f"{head}{kind:<7} p50 {s['p50']:.3f}  p90 {s['p90']:.3f}  "
                     f"p99 {s['p99']:.3f}  max {s['max']:.3f}  (mean {s['mean']:.3f})")
        head = " " * len(head)
    v = r["verified"]
    if v is not None:
        verdict = ("all found" if v["events_in_log"] == v["events_acknowledged"]
                   else "MISSING EVENTS" if v["events_in_log"] < v["events_acknowledged"]
                   else "more than acknowledged (appends that failed at the client landed)")
        lines.append(f"  verified     {v['events_in_log']:>10} events in the log for "
                     f"{v['events_acknowledged']} acknowledged: {verdict}")
    return "\n".join(lines)
