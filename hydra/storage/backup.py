"""Online backup and restore: ``hydra backup DEST`` and ``hydra restore BACKUP DATA``.

A backup is a copy of the log up to one committed position P, taken while the
writer goes on appending. It relies on two properties of the log: records are
never changed once written, and positions are byte offsets. So the closed
segments before P are copied whole, the segment holding P is copied up to P
(the rest of the copy is zeros, i.e. unwritten), and nothing after P is taken:
the copy holds exactly the events committed before P, and the last of them
closes its atomic batch (a committed position always ends a group commit).

- P comes from the running writer (its health answer, over the command socket);
  for a stopped store the tool takes the directory lock for the duration (no
  writer can start meanwhile) and P is the end of the log's last complete batch.
- The index is not copied: the store restored from the backup rebuilds it from
  the log when it first opens (``hydra restore`` does that at once).
- Incremental: a segment the previous backup in DEST copied whole, and that is
  the same file in the source (same inode, size and mtime), is hard-linked from
  the previous backup instead of copied. Only new segments and the one holding
  P are read from the source.
- Atomic: the new backup is built in ``DEST.partial-PID`` beside DEST, every file
  and the directory fsynced, then swapped with DEST in one ``renameat2(...,
  RENAME_EXCHANGE)`` and the old one removed. Killed at any point, DEST is
  either the previous complete backup or the new one; a partial directory left
  by a killed run is removed by the next one.

Layout of a backup: a Hydra data directory (manifest and segments) plus
``backup.json`` describing it (format, position, segment size, time, source, and
per segment the bytes copied and the source file's identity).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import time
import zlib
from typing import Any, Final

from hydra.errors import HydraError, StorageError, StoreLocked
from hydra.storage.format import (
    ENVELOPE_SIZE,
    FLAG_BATCH_END,
    FRAME_SIZE,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
)
from hydra.storage.lock import DirectoryLock
from hydra.storage.manifest import MANIFEST_NAME, fsync_dir, read_manifest, write_manifest
from hydra.storage.segments import SegmentSet, list_segments, segment_name

BACKUP_FILE: Final = "backup.json"
BACKUP_FORMAT: Final = "hydra-backup 1"
PARTIAL: Final = ".partial-"
COPY_CHUNK: Final = 4 << 20
_RENAME_EXCHANGE: Final = 2


class BackupError(HydraError):
    """The backup or restore cannot be done (the message says why)."""


# -- the position ----------------------------------------------------------------


def committed_of_running(data_dir: str, endpoint: str | None, curve: bool) -> int:
    """The running writer's committed position (its health answer)."""
    from hydra._protocol import default_endpoints
    from hydra.writer.process import request_health

    keys = None
    if curve:
        from hydra._curve import client_keys

        keys = client_keys(data_dir)
    endpoint = endpoint or default_endpoints(data_dir)[0]
    try:
        health = request_health(endpoint, timeout=5.0, curve=keys)
    except HydraError as exc:
        raise BackupError(f"the data directory is locked by a writer, but {exc} "
                          "(set --command-endpoint, or --zmq-curve, as the writer has them)"
                          ) from None
    return int(health["committed_position"])


def end_of_stopped(segments: SegmentSet, numbers: list[int]) -> int:
    """The end of the last complete atomic batch of a stopped store's log."""
    if not numbers:
        return 0
    last = numbers[-1]
    size = segments.segment_size
    # Closed segments were synced whole before the next began: only the last
    # one can end in a torn batch. The framing alone tells where the complete
    # batches end (what each record means is recovery's business, on the copy).
    buf = segments.map(last)
    offset = end = 0
    while offset + RECORD_HEADER_SIZE <= size:
        length, crc, _, _, flags = RECORD_HEADER.unpack_from(buf, offset)[:5]
        nxt = offset + FRAME_SIZE + length
        if length < ENVELOPE_SIZE or nxt > size or zlib.crc32(buf[offset + FRAME_SIZE:nxt]) != crc:
            break
        if flags & FLAG_BATCH_END:
            end = nxt
        offset = nxt
    return last * size + end


# -- copying ---------------------------------------------------------------------


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns]


def _previous(dest: str) -> dict[str, Any] | None:
    """The description of the backup in DEST, None when DEST is absent or empty."""
    if not os.path.isdir(dest):
        if os.path.exists(dest):
            raise BackupError(f"{dest} exists and is not a directory")
        return None
    if not os.listdir(dest):
        return None
    try:
        with open(os.path.join(dest, BACKUP_FILE), "rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise BackupError(f"{dest} is not empty and holds no Hydra backup ({BACKUP_FILE}); "
                          "name a new or empty directory") from None
    except (OSError, ValueError) as exc:
        raise BackupError(f"{dest}/{BACKUP_FILE} cannot be read ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != BACKUP_FORMAT:
        raise BackupError(f"{dest}/{BACKUP_FILE} is not a Hydra backup description")
    return doc


def _copy_range(src_fd: int, dst_fd: int, length: int) -> None:
    offset = 0
    while offset < length:
        n = os.copy_file_range(src_fd, dst_fd, min(COPY_CHUNK, length - offset), offset, offset)
        if n == 0:
            raise StorageError(f"the segment ended {length - offset} bytes early")
        offset += n


def _exchange(a: str, b: str) -> None:
    """Swap two directory entries atomically (Linux renameat2 RENAME_EXCHANGE)."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd = -100
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b),
                      _RENAME_EXCHANGE) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def backup(data_dir: str, dest: str, *, endpoint: str | None = None, curve: bool = False,
           out: Any = sys.stdout) -> dict[str, Any]:
    """Back the store at ``data_dir`` up into ``dest``; returns the new description."""
    source = os.path.abspath(data_dir)
    dest = os.path.abspath(dest.rstrip("/") or dest)
    manifest = read_manifest(source) if os.path.isdir(source) else None
    if manifest is None:
        raise BackupError(f"{source} is not a Hydra data directory (no manifest)")
    if dest == source or dest.startswith(source + os.sep):
        raise BackupError(f"the backup {dest} must be outside the data directory {source}")
    previous = _previous(dest)
    if previous is not None and previous.get("segment_size") != manifest.segment_size:
        raise BackupError(f"{dest} holds a backup of a log with another segment size")
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise BackupError(f"{parent} does not exist")
    for name in os.listdir(parent):  # what a killed run left behind
        if name.startswith(os.path.basename(dest) + PARTIAL):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)

    size = manifest.segment_size
    lock: DirectoryLock | None = None
    try:
        lock = DirectoryLock(source)
    except StoreLocked:
        lock = None
    segments = SegmentSet(source, size, writable=False)
    started = time.monotonic()
    try:
        numbers = list_segments(source)
        if lock is None:
            position = committed_of_running(source, endpoint, curve)
            mode = "running server"
        else:
            position = end_of_stopped(segments, numbers)
            mode = "stopped store"
        last = (position - 1) // size if position else -1
        print(f"backup of {source} ({mode}) up to position {position}: "
              f"{last + 1} segments into {dest}", file=out, flush=True)
        tmp = f"{dest}{PARTIAL}{os.getpid()}"
        os.mkdir(tmp, 0o700)
        described: dict[str, Any] = {}
        copied = linked = 0
        old = (previous or {}).get("segments", {})
        for number in range(last + 1):
            name = segment_name(number)
            src = segments.path(number)
            want = size if number < last else position - number * size
            src_fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
            try:
                ident = _identity(os.fstat(src_fd))
                before = old.get(name)
                target = os.path.join(tmp, name)
                if (before is not None and before.get("bytes") == size == want
                        and before.get("source") == ident):
                    # Unchanged since the last backup: share its file (never
                    # written again: each backup writes new files only).
                    os.link(os.path.join(dest, name), target)
                    linked += 1
                    how = "unchanged, linked"
                else:
                    dst_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC,
                                     0o600)
                    try:
                        _copy_range(src_fd, dst_fd, want)
                        # The rest of the segment is unwritten: zeros (a hole).
                        os.ftruncate(dst_fd, size)
                        os.fsync(dst_fd)
                    finally:
                        os.close(dst_fd)
                    copied += want
                    how = f"copied {want / 2**20:.1f} MiB"
            finally:
                os.close(src_fd)
            described[name] = {"bytes": want, "source": ident}
            print(f"  [{number + 1}/{last + 1}] {name}: {how}", file=out, flush=True)
        write_manifest(tmp, manifest)
        doc = {"format": BACKUP_FORMAT, "position": position, "segment_size": size,
               "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "source": source, "segments": described}
        path = os.path.join(tmp, BACKUP_FILE)
        with open(path, "w") as f:
            json.dump(doc, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        # Every file, then the directory, on disk before the backup takes DEST's place.
        fsync_dir(tmp)
        if previous is None:
            if os.path.isdir(dest):
                os.rmdir(dest)  # empty
            os.rename(tmp, dest)
        else:
            _exchange(tmp, dest)
            shutil.rmtree(tmp)  # the previous backup, now under the partial name
        fsync_dir(parent)
    finally:
        segments.close()
        if lock is not None:
            lock.release()
    print(f"done: position {position}, {copied / 2**20:.1f} MiB copied, {linked} segments "
          f"unchanged, {time.monotonic() - started:.1f} s", file=out, flush=True)
    return doc


# -- restore ---------------------------------------------------------------------


def restore(backup_dir: str, data_dir: str, *, out: Any = sys.stdout) -> int:
    """Copy the backup into a new data directory and open it once (which builds the
    index); returns the number of events."""
    import hydra

    backup_dir = os.path.abspath(backup_dir)
    data_dir = os.path.abspath(data_dir.rstrip("/") or data_dir)
    doc = _previous(backup_dir)
    if doc is None:
        raise BackupError(f"{backup_dir} holds no Hydra backup")
    if os.path.exists(data_dir) and (not os.path.isdir(data_dir) or os.listdir(data_dir)):
        raise BackupError(f"{data_dir} exists and is not empty; restore into a new directory")
    parent = os.path.dirname(data_dir)
    if not os.path.isdir(parent):
        raise BackupError(f"{parent} does not exist")
    tmp = f"{data_dir}{PARTIAL}{os.getpid()}"
    os.mkdir(tmp, 0o700)
    try:
        names = [MANIFEST_NAME, *sorted(doc["segments"])]
        for n, name in enumerate(names):
            shutil.copyfile(os.path.join(backup_dir, name), os.path.join(tmp, name))
            with open(os.path.join(tmp, name), "rb+") as f:
                os.fsync(f.fileno())
            if n:
                print(f"  [{n}/{len(names) - 1}] {name}", file=out, flush=True)
        fsync_dir(tmp)
        if os.path.isdir(data_dir):
            os.rmdir(data_dir)
        os.rename(tmp, data_dir)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print("building the index from the log ...", file=out, flush=True)
    with hydra.open(data_dir) as store:
        events = store.stats()["events"]
        position = store.committed_position
    if position != doc["position"]:
        raise BackupError(f"the restored log ends at {position}, the backup says "
                          f"{doc['position']}; run `hydra verify {data_dir}`")
    print(f"restored {data_dir}: {events} events, up to position {position}", file=out,
          flush=True)
    return events


# -- the commands ------------------------------------------------------------------


def main(argv: list[str]) -> int:
    from hydra.cli import ArgumentParser, parse_flag

    p = ArgumentParser(prog="hydra backup", description=(
        "Copy a Hydra store up to its committed position into DEST, while the server "
        "runs (or from a stopped store). A second backup into DEST copies only what "
        "changed; DEST is replaced atomically."))
    p.add_argument("dest", help="the backup directory (new, empty, or an earlier backup)")
    p.add_argument("--data", default=os.environ.get("HYDRA_DATA"),
                   help="the data directory [HYDRA_DATA]")
    p.add_argument("--command-endpoint", default=os.environ.get("HYDRA_COMMAND_ENDPOINT"),
                   help="the running writer's command socket (default: ipc in DATA/run) "
                        "[HYDRA_COMMAND_ENDPOINT]")
    p.add_argument("--zmq-curve", default=os.environ.get("HYDRA_ZMQ_CURVE", "false"),
                   help="the writer's sockets use CURVE [HYDRA_ZMQ_CURVE]")
    args = p.parse_args(argv)
    try:
        if not args.data:
            raise BackupError("no data directory: pass --data DIR or set HYDRA_DATA")
        backup(args.data, args.dest, endpoint=args.command_endpoint,
               curve=parse_flag(args.zmq_curve, "--zmq-curve"))
    except (HydraError, OSError) as exc:
        print(f"hydra backup: {_describe(exc)}", file=sys.stderr)
        return 1
    return 0


def restore_main(argv: list[str]) -> int:
    from hydra.cli import ArgumentParser

    p = ArgumentParser(prog="hydra restore", description=(
        "Make a new data directory from a backup made by `hydra backup`, and build "
        "its index."))
    p.add_argument("backup", help="the backup directory")
    p.add_argument("data", help="the new data directory (must not exist, or be empty)")
    args = p.parse_args(argv)
    try:
        restore(args.backup, args.data)
    except (HydraError, OSError) as exc:
        print(f"hydra restore: {_describe(exc)}", file=sys.stderr)
        return 1
    return 0


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror}: {exc.filename}"
    if isinstance(exc, OSError) and exc.errno == errno.EXDEV:
        return "the backup must be on one file system with its previous version"
    return str(exc)
