"""TLS for both APIs: one certificate and key (PEM) serve HTTPS and gRPC over TLS.

Both files are read once at start, so a bad path or a key that does not match
the certificate stops the gateway with one clear line instead of failing the
first handshake.
"""

from __future__ import annotations

import ssl
from typing import NamedTuple

import grpc  # type: ignore[import-untyped]

from hydra.errors import InvalidArgument


class ServerTls(NamedTuple):
    cert_file: str
    key_file: str
    grpc_credentials: grpc.ServerCredentials


def load_server_tls(cert_file: str, key_file: str) -> ServerTls:
    """Check the pair (the way uvicorn will load it) and build gRPC's credentials."""
    try:
        with open(cert_file, "rb") as f:
            cert = f.read()
        with open(key_file, "rb") as f:
            key = f.read()
    except OSError as exc:
        raise InvalidArgument(f"cannot read the TLS certificate or key: {exc}") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, ValueError) as exc:
        raise InvalidArgument(
            f"TLS certificate {cert_file} and key {key_file} cannot be used together: {exc}"
        ) from None
    return ServerTls(cert_file, key_file, grpc.ssl_server_credentials([(key, cert)]))
