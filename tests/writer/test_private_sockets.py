"""The writer's sockets are private: another local user can neither reach the ipc
sockets (0700 run directory) nor read the log (0600 files), and over TCP only CURVE
clients holding the data directory's client key are answered."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
import zmq

from hydra._curve import client_keys
from hydra._protocol import OP_HEALTH, packb, peer_socket
from hydra.errors import InvalidArgument
from hydra.writer.config import WriterConfig
from hydra.writer.process import WriterProcess, request_health
from tests.gateway._cluster import Cluster, free_port


@pytest.fixture
def public_dir() -> Iterator[str]:
    """A directory every user may enter: only the data directory's own modes protect it."""
    root = tempfile.mkdtemp(prefix="hyp-", dir="/tmp")
    os.chmod(root, 0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def other_user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.skip("creating a throwaway user needs root")
    if shutil.which("useradd") is None:
        pytest.skip("no useradd to create a throwaway user")
    name = f"hyd{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True)


def _as_user(user: pwd.struct_passwd, check: object) -> int:
    """Run ``check()`` (returns an exit code) in a child process as ``user``."""
    pid = os.fork()
    if pid == 0:  # the child: drop to the other user, never return to pytest
        code = 99
        try:
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            code = check()  # type: ignore[operator]
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _zmq_health_answered(endpoint: str) -> bool:
    context: zmq.Context = zmq.Context()
    sock = peer_socket(context, "command")
    sock.connect(endpoint)
    try:
        for _ in range(100):
            try:
                sock.send(packb({"id": 1, "op": OP_HEALTH}), zmq.DONTWAIT)
                break
            except zmq.Again:
                time.sleep(0.02)
        return bool(sock.poll(1500, zmq.POLLIN))
    finally:
        sock.close(linger=0)
        context.term()


def test_another_user_cannot_reach_the_ipc_sockets_or_read_the_log(
        public_dir: str, other_user: pwd.struct_passwd) -> None:
    data = os.path.join(public_dir, "data")
    with WriterProcess(data) as writer:
        writer.health()  # this user is answered
        os.chmod(data, 0o755)  # even if the operator opens the directory itself up
        cmd = writer.command_endpoint[len("ipc://"):]

        def check() -> int:
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(cmd)
                    return 1
                except PermissionError:
                    pass
            try:
                open(os.path.join(data, "hydra-00000.log"), "rb").close()
                return 2
            except PermissionError:
                pass
            return 3 if _zmq_health_answered(writer.command_endpoint) else 0

        assert _as_user(other_user, check) == 0


def test_tcp_needs_loopback_or_curve(public_dir: str, other_user: pwd.struct_passwd) -> None:
    data = os.path.join(public_dir, "data")
    base = {"HYDRA_DATA": data}
    with pytest.raises(InvalidArgument, match="not a loopback address"):
        WriterConfig.from_args(["--command-endpoint", "tcp://0.0.0.0:5000"], base)
    WriterConfig.from_args(["--command-endpoint", "tcp://0.0.0.0:5000", "--zmq-curve", "1"],
                           base)
    WriterConfig.from_args(["--command-endpoint", "tcp://127.0.0.1:5000"], base)
    command = f"tcp://127.0.0.1:{free_port()}"
    feed = f"tcp://127.0.0.1:{free_port()}"
    with WriterProcess(data, command_endpoint=command, feed_endpoint=feed, zmq_curve=True) as w:
        assert w.health()["committed_position"] == 0  # with the client key: answered
        curve_dir = os.path.join(data, "curve")
        assert os.stat(curve_dir).st_mode & 0o077 == 0
        assert os.stat(os.path.join(curve_dir, "client.key_secret")).st_mode & 0o077 == 0
        # Without the key, even this user's plain socket gets nothing back.
        assert not _zmq_health_answered(command)
        # Nor another user, who cannot read the keys.
        assert _as_user(other_user, lambda: 1 if _zmq_health_answered(command) else 0) == 0
        keys = client_keys(data)
        assert request_health(command, 2.0, keys)["committed_position"] == 0


def test_a_server_over_curve_tcp() -> None:
    """Writer and gateways under supervisord, talking over loopback TCP with CURVE."""
    # (The cluster's usual 2 s writer timeout is for the tests of a writer that
    # is down; here the first append on a loaded machine may take longer.)
    cluster = Cluster(workers=1, HYDRA_ZMQ_CURVE="1", HYDRA_WRITER_TIMEOUT="10",
                      HYDRA_COMMAND_ENDPOINT=f"tcp://127.0.0.1:{free_port()}",
                      HYDRA_FEED_ENDPOINT=f"tcp://127.0.0.1:{free_port()}")
    cluster.start()
    try:
        with httpx.Client(base_url=cluster.http_url, timeout=10) as c:
            r = c.post("/streams/curve", json={"data": "eA==", "expectedVersion": 0})
            assert r.status_code == 201, r.text
            assert c.get("/health").json()["writer"]["reachable"] is True
            lines = c.get("/streams/curve").text.splitlines()
            assert [json.loads(line)["version"] for line in lines] == [0]
    finally:
        cluster.stop()
