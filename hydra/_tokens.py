"""Bearer tokens: the tokens file, hashed at rest, and the roles they carry.

A token is ``hydra_`` followed by 43 URL-safe base64 characters (32 random
bytes from ``secrets``). The file keeps only a SHA-256 digest of each token,
one line per token::

    # name  role   sha256 of the token
    ci      write  9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

A fast hash is right here (not a password KDF): the tokens are 256 random bits,
so nobody can guess one from its digest, and the server hashes the presented
token on every request. Lines starting with ``#`` and blank lines are ignored;
names are unique.

Roles are ordered: ``read`` (reads, subscriptions) < ``write`` (read + append +
snapshots) < ``admin`` (everything, including delete, metadata and scavenging).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import stat
import sys
from dataclasses import dataclass
from typing import Final, Literal

from hydra.errors import InvalidArgument

Role = Literal["read", "write", "admin"]
ROLES: Final[tuple[Role, ...]] = ("read", "write", "admin")
RANK: Final[dict[str, int]] = {role: n for n, role in enumerate(ROLES)}
PREFIX: Final = "hydra_"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.@")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request comes from: the token's name and role."""

    name: str
    role: Role


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def new_token() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def check_name(name: object) -> str:
    if type(name) is not str or not 1 <= len(name) <= 64 or not set(name) <= _NAME_CHARS:
        raise InvalidArgument(
            f"a token name is 1 to 64 characters of letters, digits and -_.@, got {name!r}"
        )
    return name


def check_role(role: object) -> Role:
    if role not in RANK:
        raise InvalidArgument(f"a role is one of {', '.join(ROLES)}, got {role!r}")
    return role  # type: ignore[return-value]


class TokenFile:
    """The tokens of a tokens file, by digest. ``load`` again to pick up changes."""

    def __init__(self, path: str, entries: dict[str, Principal]) -> None:
        self.path = path
        self._by_digest = entries

    @classmethod
    def load(cls, path: str) -> TokenFile:
        """Read ``path``. Raises InvalidArgument naming the file and line when it is bad."""
        try:
            st = os.stat(path)
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise InvalidArgument(
                f"tokens file {path} does not exist (create it with `hydra token add`)"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"cannot read tokens file {path}: {exc}") from None
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            # Whoever can write it can make themselves admin.
            raise InvalidArgument(
                f"tokens file {path} is writable by other users (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it"
            )
        return cls(path, parse(text, path))

    def principals(self) -> list[Principal]:
        return list(self._by_digest.values())

    def __len__(self) -> int:
        return len(self._by_digest)

    def lookup(self, token: str) -> Principal | None:
        """The principal of ``token``, or None when the file does not hold it."""
        # A lookup by digest: its timing can only tell about the digest of what
        # the caller sent, never about a stored token.
        return self._by_digest.get(digest(token))


def parse(text: str, path: str = "<tokens>") -> dict[str, Principal]:
    entries: dict[str, Principal] = {}
    names: set[str] = set()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"tokens file {path} line {n}"
        if len(fields) != 3:
            raise InvalidArgument(f"{where}: expected 'NAME ROLE SHA256', got {line!r}")
        name, role, hexdigest = fields
        try:
            check_name(name)
            check_role(role)
        except InvalidArgument as exc:
            raise InvalidArgument(f"{where}: {exc}") from None
        if len(hexdigest) != 64 or not set(hexdigest) <= set("0123456789abcdef"):
            raise InvalidArgument(f"{where}: the digest must be 64 lowercase hex digits")
        if name in names:
            raise InvalidArgument(f"{where}: the name {name!r} appears twice")
        names.add(name)
        entries[hexdigest] = Principal(name, role)  # type: ignore[arg-type]
    return entries


def add_token(path: str, name: str, role: str) -> str:
    """Add a new token to ``path`` (created 0600 if missing); return the token."""
    check_name(name)
    check_role(role)
    if os.path.exists(path):
        existing = _read_checked(path)
        if name in {p.name for p in parse(existing, path).values()}:
            raise InvalidArgument(f"tokens file {path} already has a token named {name!r}")
        if existing and not existing.endswith("\n"):
            existing += "\n"
    else:
        existing = "# Hydra tokens: name, role, SHA-256 of the token (`hydra token add`)\n"
    token = new_token()
    _rewrite(path, existing + f"{name} {role} {digest(token)}\n")
    return token


def remove_token(path: str, name: str) -> None:
    """Remove the token named ``name``; raises InvalidArgument when there is none."""
    existing = _read_checked(path)
    kept, found = [], False
    for line in existing.splitlines(keepends=True):
        fields = line.split()
        if fields and not fields[0].startswith("#") and fields[0] == name:
            found = True
            continue
        kept.append(line)
    if not found:
        raise InvalidArgument(f"tokens file {path} has no token named {name!r}")
    _rewrite(path, "".join(kept))


def _read_checked(path: str) -> str:
    TokenFile.load(path)  # refuse to edit a file the server would refuse
    with open(path, encoding="utf-8") as f:
        return f.read()


def _rewrite(path: str, text: str) -> None:
    """Replace the file whole (temporary file, fsync, rename, fsync the directory),
    so a server reloading it never sees half a line."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())  # the new bytes are on disk before the rename
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)  # the rename itself survives a crash
    finally:
        os.close(dfd)


def main(argv: list[str]) -> int:
    """``hydra token add NAME ROLE | remove NAME | list`` on $HYDRA_TOKENS_FILE or --file."""
    import argparse

    p = argparse.ArgumentParser(
        prog="hydra token",
        description="Manage the bearer tokens of a tokens file. The server reloads the "
                    "file on SIGHUP (supervisorctl signal HUP 'gateway:*').",
    )
    p.add_argument("--file", default=os.environ.get("HYDRA_TOKENS_FILE"),
                   help="the tokens file [HYDRA_TOKENS_FILE]")
    sub = p.add_subparsers(dest="action", required=True)
    add = sub.add_parser("add", help="add a token and print it (the only time it is shown)")
    add.add_argument("name")
    add.add_argument("role", help="read, write or admin")
    rm = sub.add_parser("remove", help="remove (revoke) a token by name")
    rm.add_argument("name")
    sub.add_parser("list", help="list names and roles")
    args = p.parse_args(argv)
    if not args.file:
        print("hydra token: name the tokens file with --file or HYDRA_TOKENS_FILE",
              file=sys.stderr)
        return 2
    try:
        if args.action == "add":
            print(add_token(args.file, args.name, args.role))
        elif args.action == "remove":
            remove_token(args.file, args.name)
        else:
            for principal in sorted(TokenFile.load(args.file).principals(),
                                    key=lambda x: x.name):
                print(f"{principal.name} {principal.role}")
    except (InvalidArgument, OSError) as exc:
        print(f"hydra token: {exc}", file=sys.stderr)
        return 1
    return 0
