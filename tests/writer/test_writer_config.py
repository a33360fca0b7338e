"""``hydra writer`` options, environment defaults and bad-option handling."""

from __future__ import annotations

import os

import pytest

import hydra
from hydra.writer.__main__ import main
from hydra.writer.config import WriterConfig


def test_defaults(short_dir):
    cfg = WriterConfig.from_args(["--data", short_dir], {})
    assert cfg.data_dir == short_dir
    assert cfg.sync == "every-write"
    assert cfg.command_endpoint == f"ipc://{short_dir}/run/cmd.sock"
    assert cfg.feed_endpoint == f"ipc://{short_dir}/run/feed.sock"
    assert cfg.segment_size is None and cfg.heartbeat_interval <= 1.0
    assert cfg.metrics_flush == 0.1


def test_options(short_dir):
    cfg = WriterConfig.from_args([
        "--data", short_dir, "--sync", "async", "--sync-interval", "0.5", "--sync-batch", "7",
        "--command-endpoint", "tcp://127.0.0.1:7001", "--feed-endpoint", "tcp://127.0.0.1:7002",
        "--segment-size", "65536", "--heartbeat-interval", "0.2", "--metrics-flush", "2",
    ], {})
    assert (cfg.sync, cfg.sync_interval, cfg.sync_batch) == ("async", 0.5, 7)
    assert cfg.command_endpoint == "tcp://127.0.0.1:7001"
    assert cfg.segment_size == 65536 and cfg.heartbeat_interval == 0.2
    assert cfg.metrics_flush == 2


def test_limits(short_dir):
    cfg = WriterConfig.from_args(["--data", short_dir, "--limits", "max_event_size=100"], {})
    assert cfg.limits.max_event_size == 100
    env = {"HYDRA_DATA": short_dir, "HYDRA_LIMITS": "max_batch_events=3, max_stream_id=10"}
    cfg = WriterConfig.from_args([], env)
    assert (cfg.limits.max_batch_events, cfg.limits.max_stream_id) == (3, 10)
    assert cfg.limits.max_event_size == hydra.limits.DEFAULT_LIMITS.max_event_size


def test_environment_supplies_defaults_and_options_win(short_dir):
    env = {"HYDRA_DATA": short_dir, "HYDRA_SYNC": "every-second", "HYDRA_SYNC_BATCH": "3",
           "HYDRA_FEED_ENDPOINT": "tcp://127.0.0.1:7010"}
    cfg = WriterConfig.from_args([], env)
    assert (cfg.data_dir, cfg.sync, cfg.sync_batch) == (short_dir, "every-second", 3)
    assert cfg.feed_endpoint == "tcp://127.0.0.1:7010"
    assert cfg.command_endpoint == f"ipc://{short_dir}/run/cmd.sock"
    assert WriterConfig.from_args(["--sync", "async"], env).sync == "async"


@pytest.mark.parametrize("args", [
    [],
    ["--sync", "sometimes"],
    ["--sync-interval", "soon"],
    ["--sync-interval", "0"],
    ["--sync-batch", "0"],
    ["--sync-batch", "1.5"],
    ["--segment-size", "12"],
    ["--command-endpoint", "udp://x:1"],
    ["--command-endpoint", "tcp://127.0.0.1:7001", "--feed-endpoint", "tcp://127.0.0.1:7001"],
    ["--heartbeat-interval", "5"],
    ["--metrics-flush", "0"],
    ["--metrics-flush", "soon"],
    ["--limits", "max_event_size"],
    ["--limits", "max_event_size=big"],
    ["--limits", "max_event_size=0"],
    ["--limits", "no_such_limit=3"],
    ["--no-such-option"],
])
def test_bad_options_exit_non_zero(short_dir, args, capsys):
    argv = args if args == [] else ["--data", short_dir, *args]
    old = os.environ.pop("HYDRA_DATA", None)
    try:
        assert main(argv) == 2
    finally:
        if old is not None:
            os.environ["HYDRA_DATA"] = old
    assert capsys.readouterr().err.strip()


def test_bad_environment_value_is_reported(short_dir):
    with pytest.raises(hydra.InvalidArgument, match="sync"):
        WriterConfig.from_args([], {"HYDRA_DATA": short_dir, "HYDRA_SYNC": "never"})


def test_overlong_data_dir_is_a_clear_error(short_dir, capsys):
    deep = os.path.join(short_dir, "d" * 100)
    assert main(["--data", deep]) == 2
    assert "107" in capsys.readouterr().err
    # Explicit TCP endpoints make such a directory usable.
    cfg = WriterConfig.from_args(["--data", deep, "--command-endpoint", "tcp://127.0.0.1:7001",
                                  "--feed-endpoint", "tcp://127.0.0.1:7002"], {})
    assert cfg.data_dir == deep


def test_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    assert "--sync-interval" in capsys.readouterr().out
