"""The tokens file: hashed at rest, checked line by line, edited atomically; and the
``hydra token`` command."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from hydra._tokens import TokenFile, add_token, parse, remove_token
from hydra.errors import InvalidArgument


def test_add_lookup_remove(tmp_path) -> None:
    path = str(tmp_path / "tokens")
    read = add_token(path, "ci", "read")
    admin = add_token(path, "ops@example", "admin")
    assert os.stat(path).st_mode & 0o777 == 0o600
    text = open(path).read()
    assert read not in text and admin not in text  # only digests at rest
    assert hashlib.sha256(read.encode()).hexdigest() in text
    tokens = TokenFile.load(path)
    assert tokens.lookup(read).role == "read"  # type: ignore[union-attr]
    assert tokens.lookup(admin).name == "ops@example"  # type: ignore[union-attr]
    assert tokens.lookup(read + "x") is None and tokens.lookup("") is None
    with pytest.raises(InvalidArgument, match="already has a token named 'ci'"):
        add_token(path, "ci", "write")
    remove_token(path, "ci")
    assert TokenFile.load(path).lookup(read) is None
    with pytest.raises(InvalidArgument, match="no token named 'ci'"):
        remove_token(path, "ci")
    assert not [n for n in os.listdir(tmp_path) if ".tmp." in n]


@pytest.mark.parametrize("text, words", [
    ("ci read\n", "line 1: expected 'NAME ROLE SHA256'"),
    ("ci root " + "a" * 64 + "\n", "a role is one of read, write, admin"),
    ("c i read " + "a" * 64 + "\n", "expected"),
    ("ci read " + "A" * 64 + "\n", "64 lowercase hex"),
    ("ci read abc\n", "64 lowercase hex"),
    ("# c\n\nci read " + "a" * 64 + "\nci write " + "b" * 64 + "\n", "line 4: the name 'ci'"),
    ("bad/name read " + "a" * 64 + "\n", "token name"),
])
def test_bad_files_are_refused_with_the_line(text: str, words: str) -> None:
    with pytest.raises(InvalidArgument, match=words):
        parse(text, "f")


def test_unsafe_or_missing_files_are_refused(tmp_path) -> None:
    path = str(tmp_path / "tokens")
    with pytest.raises(InvalidArgument, match="does not exist"):
        TokenFile.load(path)
    add_token(path, "ci", "read")
    os.chmod(path, 0o666)
    with pytest.raises(InvalidArgument, match="writable by other users"):
        TokenFile.load(path)
    with pytest.raises(InvalidArgument, match="writable by other users"):
        add_token(path, "more", "read")


@pytest.mark.parametrize("name, role", [("", "read"), ("x" * 65, "read"), ("a b", "read"),
                                        ("ok", "superuser")])
def test_bad_names_and_roles(tmp_path, name: str, role: str) -> None:
    with pytest.raises(InvalidArgument):
        add_token(str(tmp_path / "tokens"), name, role)
    assert not (tmp_path / "tokens").exists()


def _hydra(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hydra", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def test_token_command(tmp_path) -> None:
    path = str(tmp_path / "tokens")
    out = _hydra("token", "add", "ci", "write", env={"HYDRA_TOKENS_FILE": path})
    assert out.returncode == 0, out.stderr
    token = out.stdout.strip()
    assert token.startswith("hydra_") and len(token) > 40
    assert TokenFile.load(path).lookup(token).role == "write"  # type: ignore[union-attr]
    out = _hydra("token", "--file", path, "list")
    assert out.stdout == "ci write\n" and token not in out.stdout
    out = _hydra("token", "--file", path, "add", "ci", "read")
    assert out.returncode == 1 and out.stderr.startswith("hydra token: ")
    out = _hydra("token", "--file", path, "add", "x", "boss")
    assert out.returncode == 1 and "a role is one of" in out.stderr
    out = _hydra("token", "list", env={"HYDRA_TOKENS_FILE": ""})
    assert out.returncode == 2 and "HYDRA_TOKENS_FILE" in out.stderr
    out = _hydra("--version")
    assert out.returncode == 0 and out.stdout.startswith("hydra ")
