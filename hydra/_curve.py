"""CURVE security for the writer's ZeroMQ sockets over TCP (pyzmq's CURVE and ZAP).

By default the writer's sockets are ipc sockets in ``DATA/run/`` (0700): only
this user can reach them. A TCP endpoint is reachable by anyone who can reach
the address, so the configuration refuses one unless it is loopback or CURVE
is on (``HYDRA_ZMQ_CURVE=1``), and even on loopback every local user can
connect: turn CURVE on there too unless all local users are trusted.

With CURVE the writer's sockets are CURVE servers and accept only clients that
hold the client key; both key pairs live in ``DATA/curve/`` (0700, secret files
0600), created by the writer on first use::

    DATA/curve/server.key          the writer's public key
    DATA/curve/server.key_secret   the writer's key pair
    DATA/curve/client.key_secret   the one client key pair gateways and taps use
    DATA/curve/clients/client.key  public keys the writer accepts (one per file)

A process on another machine needs ``server.key`` and a client key pair whose
public half is in ``clients/`` (copy them, 0600).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from hydra.errors import InvalidArgument

CURVE_DIR = "curve"


class ClientKeys(NamedTuple):
    server_public: bytes
    public: bytes
    secret: bytes


def curve_dir(data_dir: str) -> str:
    return os.path.join(os.path.abspath(data_dir), CURVE_DIR)


def ensure_keys(data_dir: str) -> str:
    """Create the key pairs if missing (0700 directory); return the directory."""
    if not zmq.has("curve"):
        raise InvalidArgument("this libzmq has no CURVE support; use ipc endpoints")
    path = curve_dir(data_dir)
    clients = os.path.join(path, "clients")
    os.makedirs(clients, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
    if not os.path.exists(os.path.join(path, "server.key_secret")):
        zmq.auth.create_certificates(path, "server")
    if not os.path.exists(os.path.join(path, "client.key_secret")):
        public_file, _ = zmq.auth.create_certificates(path, "client")
        os.replace(public_file, os.path.join(clients, "client.key"))
    for name in os.listdir(path):
        if name.endswith(".key_secret"):
            os.chmod(os.path.join(path, name), 0o600)  # pyzmq writes them with the umask
    return path


def serve(context: zmq.Context[Any], sockets: list[zmq.Socket[Any]],
          data_dir: str) -> ThreadAuthenticator:
    """Make ``sockets`` CURVE servers that accept only the keys in ``clients/``.

    Call before binding. Returns the ZAP authenticator thread; stop it on close.
    """
    path = ensure_keys(data_dir)
    public, secret = zmq.auth.load_certificate(os.path.join(path, "server.key_secret"))
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=os.path.join(path, "clients"))
    for sock in sockets:
        sock.curve_secretkey = secret
        sock.curve_publickey = public
        sock.curve_server = True
    return auth


def client_keys(data_dir: str) -> ClientKeys:
    """The keys a gateway (or tool) uses to reach a CURVE writer of ``data_dir``."""
    path = curve_dir(data_dir)
    try:
        server_public, _ = zmq.auth.load_certificate(os.path.join(path, "server.key"))
        public, secret = zmq.auth.load_certificate(os.path.join(path, "client.key_secret"))
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"cannot read the CURVE keys in {path}: {exc}") from None
    if secret is None:
        raise InvalidArgument(f"{path}/client.key_secret holds no secret key")
    return ClientKeys(server_public, public, secret)


def secure_client(sock: zmq.Socket[Any], keys: ClientKeys | None) -> None:
    """Make ``sock`` a CURVE client of the writer (call before connecting)."""
    if keys is None:
        return
    sock.curve_serverkey = keys.server_public
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret


def check_tcp_endpoint(endpoint: str, what: str, curve: bool) -> None:
    """Refuse a TCP endpoint beyond loopback unless CURVE secures it."""
    if not endpoint.startswith("tcp://") or curve:
        return
    import ipaddress

    host = endpoint[len("tcp://"):].rpartition(":")[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidArgument(
            f"{what} {endpoint} is not a loopback address: anyone who reaches it could "
            "send the writer commands. Use ipc:// (the default), a 127.0.0.1 address, or "
            "turn on CURVE (HYDRA_ZMQ_CURVE=1)"
        )
