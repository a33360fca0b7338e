"""The README's server examples, run as written against a fresh server.

Every `curl` command of the README's "Server" section runs verbatim (only the
ports are the test server's) and its output must be what the README shows below
it, except for values that differ from run to run (timestamps, PIDs, uptime).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from ._cluster import ROOT, Cluster

_VARYING = [
    (re.compile(r'"timestamp":"[^"]*"'), '"timestamp":"<time>"'),
    (re.compile(r'"pid":\d+'), '"pid":<pid>'),
    (re.compile(r'"uptime":[\d.]+'), '"uptime":<uptime>'),
    (re.compile(r'"worker":"gateway-\d+"'), '"worker":"<worker>"'),
    (re.compile(r'"(fsyncs|groups)":\d+'), r'"\1":<count>'),
    (re.compile(r'"frozen":\d+'), '"frozen":<count>'),
    (re.compile(r'"collections":\[[\d,]*\]'), '"collections":[<counts>]'),
]


def server_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Server\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def examples(section: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for every curl command in sh blocks."""
    out: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```sh\n(.*?)```", section, re.DOTALL):
        lines = block.splitlines()
        i = 0
        while i < len(lines):
            line = lines[i]
            if not line.startswith("curl "):
                i += 1
                continue
            command = line
            while command.endswith("\\"):
                i += 1
                command = command + "\n" + lines[i]
            i += 1
            expected = []
            while i < len(lines) and lines[i].startswith("# "):
                expected.append(lines[i][2:])
                i += 1
            out.append((command, expected))
    return out


def mask(text: str) -> str:
    for pattern, replacement in _VARYING:
        text = pattern.sub(replacement, text)
    return text


@pytest.fixture(scope="module")
def fresh() -> Iterator[Cluster]:
    c = Cluster(workers=2).start()
    yield c
    c.stop()


def test_readme_has_examples() -> None:
    found = examples(server_section())
    assert len(found) >= 10
    assert sum(1 for _, expected in found if expected) >= 10


def test_readme_curl_examples_verbatim(fresh: Cluster) -> None:
    for command, expected in examples(server_section()):
        runnable = command.replace("localhost:8080", f"localhost:{fresh.http_port}")
        if "/subscribe/" in command:
            # Subscriptions never end by themselves: run them briefly.
            result = subprocess.run(["timeout", "1", "bash", "-c", runnable],
                                    capture_output=True, text=True, timeout=10, check=False)
            assert result.stdout.startswith(": subscribed"), (command, result.stdout)
            continue
        result = subprocess.run(["bash", "-c", runnable], capture_output=True, text=True,
                                timeout=30, check=False)
        assert result.returncode == 0, (command, result.stderr)
        got = [mask(line) for line in result.stdout.splitlines()]
        if os.environ.get("HYDRA_README_SHOW"):
            print(command, *("# " + line for line in result.stdout.splitlines()), sep="\n")
            continue
        assert got == [mask(line) for line in expected], command
