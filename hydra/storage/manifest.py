"""The data-directory manifest: format version and segment size, fixed at creation."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from hydra.errors import StorageError

MANIFEST_NAME = "hydra.manifest"
FORMAT_NAME = "hydra-log"
FORMAT_VERSION = 1
MIN_SEGMENT_SIZE = 4096
MAX_SEGMENT_SIZE = 1 << 40


@dataclass(frozen=True, slots=True)
class Manifest:
    format_version: int
    segment_size: int

    def to_bytes(self) -> bytes:
        return json.dumps(
            {"format": FORMAT_NAME, "version": self.format_version,
             "segment_size": self.segment_size},
            indent=2,
        ).encode() + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes, where: str) -> Manifest:
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise StorageError(f"{where}: manifest is not valid JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise StorageError(f"{where}: not a Hydra manifest")
        version = doc.get("version")
        size = doc.get("segment_size")
        if version != FORMAT_VERSION:
            raise StorageError(
                f"{where}: format version {version!r} is not supported "
                f"(this Hydra reads version {FORMAT_VERSION})"
            )
        if type(size) is not int or not MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE:
            raise StorageError(f"{where}: bad segment_size {size!r}")
        return cls(version, size)


def check_segment_size(size: object) -> int:
    from hydra.errors import InvalidArgument

    if type(size) is not int or not MIN_SEGMENT_SIZE <= size <= MAX_SEGMENT_SIZE:
        raise InvalidArgument(
            f"segment_size must be an integer between {MIN_SEGMENT_SIZE} and "
            f"{MAX_SEGMENT_SIZE}, got {size!r}"
        )
    return size


def read_manifest(directory: str) -> Manifest | None:
    """Return the directory's manifest, or None when it has none yet."""
    path = os.path.join(directory, MANIFEST_NAME)
    try:
        with open(path, "rb") as f:
            raw = f.read(1 << 16)
    except FileNotFoundError:
        return None
    return Manifest.from_bytes(raw, path)


def write_manifest(directory: str, manifest: Manifest) -> None:
    """Write the manifest atomically: temp file, fsync, rename, fsync directory."""
    path = os.path.join(directory, MANIFEST_NAME)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(manifest.to_bytes())
        f.flush()
        # The bytes must be on disk before the rename makes them the manifest.
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(directory)


def fsync_dir(directory: str) -> None:
    """Make a directory's entries (created, renamed, removed files) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
