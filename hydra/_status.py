"""``hydra status``: the processes of a running server and its committed position.

Uses the defaults of ``make run`` (``HYDRA_DATA=./data``,
``HYDRA_LOG_DIR=$HYDRA_DATA/logs``), so it needs no environment of its own.
Exit status: 0 when supervisord, every program and the writer answer; 3 when
no server runs there; 1 when it runs but something is not RUNNING or the
writer does not answer.
"""

from __future__ import annotations

import argparse
import os
import sys
import xmlrpc.client
from typing import Any, cast


def _processes(socket_path: str) -> list[dict[str, Any]]:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, serverurl="unix://" + socket_path)
    proxy = xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport)
    return cast(list[dict[str, Any]], proxy.supervisor.getAllProcessInfo())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hydra status", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=os.environ.get("HYDRA_DATA", "data"),
                   help="data directory (default ./data) [HYDRA_DATA]")
    p.add_argument("--log-dir", default=os.environ.get("HYDRA_LOG_DIR"),
                   help="supervisord's directory (default DATA/logs) [HYDRA_LOG_DIR]")
    args = p.parse_args(argv)
    data = os.path.abspath(args.data)
    log_dir = os.path.abspath(args.log_dir or os.path.join(data, "logs"))
    sock = os.path.join(log_dir, "supervisor.sock")
    try:
        infos = _processes(sock)
    except OSError as exc:
        print(f"hydra status: no server runs for {data} (no supervisord at {sock}: "
              f"{exc.strerror or exc})", file=sys.stderr)
        return 3
    except xmlrpc.client.Fault as exc:
        print(f"hydra status: supervisord at {sock} refused: {exc.faultString}",
              file=sys.stderr)
        return 1
    ok = True
    for info in infos:
        name = info["name"] if info["group"] == info["name"] else f"{info['group']}:{info['name']}"
        print(f"{name:<20} {info['statename']:<9} {info['description']}")
        ok = ok and info["statename"] == "RUNNING"
    from hydra._curve import client_keys
    from hydra._protocol import default_endpoints
    from hydra.errors import HydraError
    from hydra.writer.process import request_health

    try:
        endpoint = os.environ.get("HYDRA_COMMAND_ENDPOINT") or default_endpoints(data)[0]
        curve = os.environ.get("HYDRA_ZMQ_CURVE", "").lower() in ("1", "true", "yes", "on")
        health = request_health(endpoint, timeout=2.0,
                                curve=client_keys(data) if curve else None)
    except HydraError as exc:
        print(f"writer: not answering ({exc})")
        return 1
    print(f"committed position {health['committed_position']}: {health['events']} events in "
          f"{health['streams']} streams, sync {health['sync_mode']}, data {data}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
