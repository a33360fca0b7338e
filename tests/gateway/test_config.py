"""Gateway options from flags and environment."""

from __future__ import annotations

import os

import pytest

from hydra.errors import InvalidArgument
from hydra.gateway.config import GatewayConfig, parse_limits


def test_defaults_and_environment(tmp_path):
    c = GatewayConfig.from_args([], {"HYDRA_DATA": str(tmp_path)})
    assert (c.host, c.http_port, c.grpc_port) == ("127.0.0.1", 8080, 9090)
    assert c.command_endpoint == f"ipc://{tmp_path}/run/cmd.sock"
    assert c.feed_endpoint == f"ipc://{tmp_path}/run/feed.sock"
    c = GatewayConfig.from_args(["--http-port", "81"], {
        "HYDRA_DATA": str(tmp_path), "HYDRA_HTTP_PORT": "80", "HYDRA_GRPC_PORT": "91",
        "HYDRA_HOST": "0.0.0.0", "HYDRA_INSECURE": "1", "HYDRA_LIMITS": "max_event_size=10",
        "HYDRA_ACCESS_LOG": "yes", "HYDRA_COMMAND_ENDPOINT": "tcp://127.0.0.1:5000",
    })
    assert (c.host, c.http_port, c.grpc_port) == ("0.0.0.0", 81, 91)
    assert c.limits.max_event_size == 10 and c.access_log
    assert c.command_endpoint == "tcp://127.0.0.1:5000"
    assert c.stall_timeout == 30
    assert GatewayConfig.from_args([], {"HYDRA_DATA": str(tmp_path),
                                        "HYDRA_STALL_TIMEOUT": "2.5"}).stall_timeout == 2.5
    assert c.metrics_flush == 0.1
    assert GatewayConfig.from_args(["--metrics-flush", "2"], {
        "HYDRA_DATA": str(tmp_path), "HYDRA_METRICS_FLUSH": "5"}).metrics_flush == 2


@pytest.mark.parametrize("argv, words", [
    ([], "data directory"),
    (["--data", "d", "--http-port", "x"], "--http-port"),
    (["--data", "d", "--http-port", "70000"], "HTTP port"),
    (["--data", "d", "--http-port", "9", "--grpc-port", "9"], "differ"),
    (["--data", "d", "--limits", "max_event_size=0"], "positive"),
    (["--data", "d", "--limits", "colour=1"], "colour"),
    (["--data", "d", "--max-request-size", "10"], "max request size"),
    (["--data", "d", "--read-wait-timeout", "-1"], "read wait timeout"),
    (["--data", "d", "--access-log", "maybe"], "--access-log"),
    (["--data", "d", "--feed-endpoint", "http://x"], "feed endpoint"),
    (["--data", "d", "--max-header-size", "100"], "max header size"),
    (["--data", "d", "--max-header-size", "1e4"], "--max-header-size"),
    (["--data", "d", "--max-headers", "0"], "max headers"),
    (["--data", "d", "--header-timeout", "0"], "header timeout"),
    (["--data", "d", "--body-timeout", "nan"], "body timeout"),
    (["--data", "d", "--idle-timeout", "soon"], "--idle-timeout"),
    (["--data", "d", "--grpc-keepalive-time", "-5"], "grpc keepalive time"),
    (["--data", "d", "--grpc-max-connection-age", "99999999"], "grpc max connection age"),
    (["--data", "d", "--stall-timeout", "0"], "stall timeout"),
    (["--data", "d", "--stall-timeout", "inf"], "stall timeout"),
    (["--data", "d", "--stall-timeout", "soon"], "--stall-timeout"),
    (["--data", "d", "--metrics-flush", "0"], "metrics flush interval"),
    (["--data", "d", "--metrics-flush", "often"], "--metrics-flush"),
])
def test_bad_options(argv, words):
    with pytest.raises(InvalidArgument, match=words):
        GatewayConfig.from_args(argv, {})


def test_parse_limits():
    assert parse_limits("max_batch_events=5, max_stream_id=10").max_batch_events == 5
    with pytest.raises(InvalidArgument):
        parse_limits("max_batch_events")


@pytest.mark.parametrize("host, env, ok", [
    ("127.0.0.1", {}, True),
    ("::1", {}, True),
    ("localhost", {}, True),
    ("0.0.0.0", {}, False),
    ("::", {}, False),
    ("0.0.0.0", {"HYDRA_INSECURE": "1"}, True),
    ("0.0.0.0", {"HYDRA_TOKENS_FILE": "/some/tokens"}, True),
    ("0.0.0.0", {"HYDRA_INSECURE": "0"}, False),
])
def test_beyond_loopback_needs_authentication_or_insecure(tmp_path, host, env, ok):
    environ = {"HYDRA_DATA": str(tmp_path), "HYDRA_HOST": host, **env}
    if ok:
        GatewayConfig.from_args([], environ)
    else:
        with pytest.raises(InvalidArgument, match=f"refusing to listen on {host} without "
                                                  "authentication.*HYDRA_INSECURE=1"):
            GatewayConfig.from_args([], environ)


def test_security_options(tmp_path):
    base = {"HYDRA_DATA": str(tmp_path)}
    c = GatewayConfig.from_args(["--tls-cert", "c.pem", "--tls-key", "k.pem",
                                 "--tokens-file", "t"], base)
    assert c.tls_cert == os.path.abspath("c.pem") and c.tokens_file == os.path.abspath("t")
    with pytest.raises(InvalidArgument, match="both a certificate and a key"):
        GatewayConfig.from_args(["--tls-cert", "c.pem"], base)
    with pytest.raises(InvalidArgument, match="not a loopback address"):
        GatewayConfig.from_args(["--feed-endpoint", "tcp://10.0.0.1:5001"], base)
    GatewayConfig.from_args(["--feed-endpoint", "tcp://10.0.0.1:5001", "--zmq-curve", "1"], base)


def test_connection_limits_from_environment(tmp_path):
    c = GatewayConfig.from_args(["--idle-timeout", "7"], {
        "HYDRA_DATA": str(tmp_path), "HYDRA_MAX_HEADER_SIZE": "4096", "HYDRA_MAX_HEADERS": "20",
        "HYDRA_HEADER_TIMEOUT": "1.5", "HYDRA_IDLE_TIMEOUT": "9",
        "HYDRA_GRPC_MAX_CONNECTION_IDLE": "0", "HYDRA_GRPC_MAX_CONNECTION_AGE": "600",
    })
    limits = c.connections
    assert (limits.max_header_size, limits.max_headers) == (4096, 20)
    assert (limits.header_timeout, limits.idle_timeout) == (1.5, 7.0)
    assert limits.grpc_max_connection_idle == 0 and limits.grpc_max_connection_age == 600
    from hydra.gateway._connections import grpc_options
    options = dict(grpc_options(limits))
    assert options["grpc.max_metadata_size"] == 4096
    assert options["grpc.server_handshake_timeout_ms"] == 1500
    assert options["grpc.max_connection_age_ms"] == 600_000
    assert "grpc.max_connection_idle_ms" not in options
