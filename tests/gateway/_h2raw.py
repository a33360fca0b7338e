"""A gRPC call over a bare socket that sends its request and then never reads:
the most a client can do to make a server hold data for it. HTTP/2 written by
hand (preface, SETTINGS, one HEADERS frame of literal fields, one DATA frame)."""

from __future__ import annotations

import socket
import struct


def _frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload))[1:] + bytes([kind, flags])
            + struct.pack(">I", stream) + payload)


def _literal(name: str, value: str) -> bytes:
    # HPACK "literal header field without indexing, new name", no Huffman coding.
    n, v = name.encode(), value.encode()
    assert len(n) < 127 and len(v) < 127
    return b"\x00" + bytes([len(n)]) + n + bytes([len(v)]) + v


def never_reading_call(host: str, port: int, method: str, request: bytes) -> socket.socket:
    """Start ``method`` (e.g. ``/eventstore.EventStore/ReadAll``) with the serialized
    ``request`` and return the socket, which the caller never reads (close it to end)."""
    s = socket.create_connection((host, port), timeout=10)
    # A small receive buffer: the kernel, too, holds little for this client.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    headers = b"".join(_literal(k, v) for k, v in (
        (":method", "POST"), (":scheme", "http"), (":path", method),
        (":authority", f"{host}:{port}"), ("content-type", "application/grpc"),
        ("te", "trailers")))
    body = b"\x00" + struct.pack(">I", len(request)) + request
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0, b"")
              + _frame(1, 4, 1, headers) + _frame(0, 1, 1, body))
    return s
