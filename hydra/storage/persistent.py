"""The persistent index: one LMDB environment in ``DIR/index/``, one writer, many readers.

The log is the source of truth; this index is a cache of it that every process
reads in place (LMDB maps the file; all processes share its pages through the
page cache) instead of scanning the log and keeping per-event state. Only the
writer (the writer process, or an embedded Store) writes it, from its group
commit loop, in one LMDB transaction per flush.

Layout (integers: ``>`` big-endian in keys so they sort, ``<`` little-endian in values)::

    meta     b"format"     b"hydra-index 4"
             b"segment"    <Q segment size of the log it indexes
             b"covered"    <Q log position it covers: every record before it is in
                           the index, nothing at or after it is
             b"tail"       <I CRC-32 of the bytes of the segment holding ``covered``
                           before it (a changed active segment is detected on open)
             b"counts"     <qqq live events, live streams, tombstones
             b"state"      b"clean" after a clean close, else b"open " + boot ID
             b"id"         <Q random ID of this index (its ``ids.bloom`` names it)
             b"filter"     b"on" while ``ids.bloom`` holds every event ID here
             b"tracking\0" + name + >Q position
                           <q notification ID of the tracking record at that
                           position (one entry per flush that stored one for
                           the name: the highest as of any position is found
                           by one cursor step)
    streams  stream key -> <qQ incarnation, event count, then per tombstone
                           <qqQ (tombstone position, incarnation it ended, events)
    chunks   >QI incarnation, chunk number -> <q positions of versions
                           64n .. 64n+63 of that incarnation
    ids      >Q incarnation + event ID -> <Q version
    all      >Q position of the chunk's first event -> <q positions of up to 64
                           events in log order
    snaps    stream key -> <qqq (position, incarnation, version) per snapshot
                           record of the stream, newest first (version -1: a
                           removal record): the ones that readers as of the
                           newest record, or of a record behind it, need to
                           choose their kept snapshots exactly (at most
                           KEPT + 1 of them and the removal records that end
                           the choice: ``hydra.storage.snapshot_history``)
    smeta    stream key -> <qqqq (position, max count, max age, truncate before) of
                           the stream's newest stream metadata record (-1: a rule
                           unset), then of the one before it, as ``snaps``
    recent   >Q position of a stream's last record (event or tombstone) ->
                           <qQ incarnation, event count there, then the stream ID
                           (one entry per stream: the stream listing, newest first)
    ordinals b"n" + >Q k   -> <Q key (first position) of the ``all`` chunk holding
                           the events of ordinals 64k+1 .. 64k+64
             b"p" + >Q position -> <Q k, for the ``all`` chunk with that key

An event's *ordinal* is its 1-based number among all event records of the log
(tombstones, snapshots and tracking records have none): ``all`` fills each chunk
to 64 positions before it starts the next, so chunk k holds ordinals 64k+1 ..
64k+64 and the ``ordinals`` table, two entries per 64 events, numbers them.

An incarnation is named by the position of its first event (positions are
unique), so the entries of a deleted incarnation stay valid for readers that
still look at the log before its tombstone, and a re-created stream starts new
keys. Keys longer than LMDB allows (511 bytes) are replaced by a SHA-256 digest
behind a NUL byte, which no valid stream or event ID contains.

Every reader asks "as of position P": entries carry positions, and a reader
filters out everything at or after the committed position it was told about,
whatever the writer has added since.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import threading
from array import array
from bisect import bisect_left
from collections.abc import Container, Generator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import lmdb

from hydra.storage.snapshot_history import newest_first, trim

if TYPE_CHECKING:
    from hydra.storage.index import Index, StreamState

INDEX_DIR = "index"
# Format 4: ``snaps`` holds a snapshot history per stream (format 3 held the
# newest two records; an index of it is rebuilt from the log on open).
FORMAT = b"hydra-index 4"
CHUNK = 64  # positions per chunk value (512 bytes: inline in a 4 KiB LMDB page)
# Virtual size of the map; LMDB grows the file as it fills (the file is never
# this large), and readers need not follow a resize.
MAP_SIZE = 1 << 40
# The writer keeps the data file at least FILE_AHEAD / 2 (and at most FILE_AHEAD)
# longer than the pages in use, by extending it (sparse) before LMDB needs it
# (``keep_ahead``). A commit that writes past the end of the file changes the
# file's size, and on ext4 the next fdatasync of the log then also commits the
# journal for it: measured in docs/BENCHMARKS.md, "The index file kept ahead".
FILE_AHEAD = 64 << 20
MAX_READERS = 4096
MAX_KEY = 480
LATEST = 1 << 62  # "as of" everything in the index (the writer's own view)

U64 = struct.Struct("<Q")
KEY_U64 = struct.Struct(">Q")
CHUNK_KEY = struct.Struct(">QI")
RECORD = struct.Struct("<qQ")
TOMB = struct.Struct("<qqQ")
COUNTS = struct.Struct("<qqq")
SNAP = struct.Struct("<qqq")
SMETA = struct.Struct("<qqqq")
TAIL = struct.Struct("<I")
assert RECORD.size == 16 and TOMB.size == 24 and CHUNK_KEY.size == 12 and COUNTS.size == 24

_pack_chunk_key = CHUNK_KEY.pack
_unpack_q = struct.Struct("<q").unpack_from
_pack_u64 = U64.pack
_unpack_u64 = U64.unpack
_pack_key64 = KEY_U64.pack
_unpack_key64 = KEY_U64.unpack


TRACKING_PREFIX = b"tracking\0"
ORD_NUMBER = b"n"  # ``ordinals`` keys: chunk number -> its ``all`` key
ORD_POSITION = b"p"  # ``all`` key -> chunk number
_I64 = struct.Struct("<q")


def tracking_dbkey(name: bytes) -> bytes:
    """The meta key prefix of an application name's tracking entries."""
    if len(name) > MAX_KEY - len(TRACKING_PREFIX) - 9:
        name = b"\0" + hashlib.sha256(name).digest()
    return TRACKING_PREFIX + name + b"\0"


def boot_id() -> bytes:
    """This boot of the machine (Linux); an index left open across a reboot is not trusted."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read().strip()
    except OSError:
        return b"unknown"


def stream_dbkey(key: bytes) -> bytes:
    if len(key) <= MAX_KEY:
        return key
    return b"\0" + hashlib.sha256(key).digest()


def id_dbkey(inc: int, event_id: bytes) -> bytes:
    if len(event_id) > MAX_KEY:
        event_id = b"\0" + hashlib.sha256(event_id).digest()
    return _pack_key64(inc) + event_id


class Incarnation(NamedTuple):
    """The incarnation of a stream live at some position, and its events before it."""

    inc: int  # position of its first event; -1 when it has none
    events: int  # its events before the position asked about
    history: bytes  # the stream's packed tombstones (TOMB each), before that position


_NO_STREAM = Incarnation(-1, 0, b"")


def _get(txn: lmdb.Transaction, key: bytes, db: Any) -> bytes:
    """A value the index's invariants say exists; its absence means a damaged index."""
    raw = txn.get(key, db=db)
    if raw is None:
        raise lmdb.CorruptedError(f"the index lacks the entry {key!r}")
    return bytes(raw)


# One Environment per index file per process: LMDB forbids opening the same
# environment twice in one process (closing one copy drops the other's locks),
# and an embedded Store and a read-only view of the same directory may share one.
_ENVS: dict[tuple[int, int], list[Any]] = {}  # (dev, inode) -> [env, users, dbs]
_ENVS_LOCK = threading.Lock()
_DB_NAMES = (b"meta", b"streams", b"chunks", b"ids", b"all", b"snaps", b"recent",
             b"ordinals", b"smeta")


def _acquire(path: str, *, create: bool) -> tuple[lmdb.Environment, dict[bytes, Any]]:
    """The process's Environment of the index in ``path`` (opened if needed) and its tables."""
    data = os.path.join(path, "data.mdb")
    with _ENVS_LOCK:
        if not create:
            try:
                st = os.stat(data)
            except FileNotFoundError:
                raise lmdb.Error(f"{data} does not exist") from None
            entry = _ENVS.get((st.st_dev, st.st_ino))
            if entry is not None:
                entry[1] += 1
                return entry[0], entry[2]
        readonly = not create and not os.access(data, os.W_OK)
        env = lmdb.open(path, map_size=MAP_SIZE, max_dbs=16, subdir=True, lock=True,
                        create=create, readonly=readonly,
                        # Commits are not synced: the covered position is checked
                        # against the log on open, and an index left open across a
                        # machine crash is rebuilt (see ``open_writer``).
                        sync=False, metasync=False, readahead=False,
                        max_readers=MAX_READERS)
        try:
            if _short_file(env, path):
                raise lmdb.Error("the data file is shorter than its pages (truncated)")
            dbs = {name: env.open_db(name, create=create) for name in _DB_NAMES}
        except BaseException:
            env.close()
            raise
        st = os.stat(data)
        _ENVS[(st.st_dev, st.st_ino)] = [env, 1, dbs]
        return env, dbs


def _release(env: lmdb.Environment) -> None:
    with _ENVS_LOCK:
        for key, entry in _ENVS.items():
            if entry[0] is env:
                entry[1] -= 1
                if entry[1]:
                    return
                del _ENVS[key]
                break
        env.close()


def _short_file(env: lmdb.Environment, path: str) -> bool:
    """Is the data file shorter than its pages in use? (Reading past its end: SIGBUS.)"""
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    return os.path.getsize(os.path.join(path, "data.mdb")) < used


def tombstones_of(history: bytes) -> list[tuple[int, int, int]]:
    return [TOMB.unpack_from(history, i) for i in range(0, len(history), TOMB.size)]


def last_tombstone(history: bytes, before: int) -> int:
    """Position of the last tombstone in ``history`` before position ``before``
    (-1: none). Tombstones are kept in log order."""
    last = -1
    for i in range(0, len(history), TOMB.size):
        t = TOMB.unpack_from(history, i)[0]
        if t >= before:
            break
        last = t
    return last


class PersistentIndex:
    """One open LMDB environment of the index: the writer's (``writable``) or a reader's."""

    def __init__(
        self, env: lmdb.Environment, dbs: dict[bytes, Any], path: str, writable: bool
    ) -> None:
        self.env = env
        self.path = path
        self.writable = writable
        self.meta = dbs[b"meta"]
        self.streams = dbs[b"streams"]
        self.chunks = dbs[b"chunks"]
        self.ids = dbs[b"ids"]
        self.all = dbs[b"all"]
        self.snaps = dbs[b"snaps"]
        self.recent = dbs[b"recent"]
        self.ordinals = dbs[b"ordinals"]
        self.smeta = dbs[b"smeta"]
        self.inode = os.stat(os.path.join(path, "data.mdb")).st_ino
        self._file_size = -1  # the data file's size as of the last ``keep_ahead`` (-1: unknown)

    def release(self) -> None:
        """Done with this index (the environment closes when its last user is done)."""
        _release(self.env)

    def keep_ahead(self) -> None:
        """Extend the data file (sparse) when the pages in use come within
        FILE_AHEAD / 2 of its end, to FILE_AHEAD past them: LMDB then writes
        within the file. Never shrinks it; a failure only leaves LMDB to grow it
        itself, as it would anyway."""
        data = os.path.join(self.path, "data.mdb")
        try:
            if self._file_size < 0:
                self._file_size = os.path.getsize(data)
            used = (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
            if self._file_size - used >= FILE_AHEAD // 2:
                return
            size = max(self._file_size, used + FILE_AHEAD)
            os.truncate(data, size)
            self._file_size = size
        except OSError:
            self._file_size = -1

    # -- opening -------------------------------------------------------------------

    @classmethod
    def open_reader(cls, directory: str) -> PersistentIndex | None:
        """Open the index of ``directory`` for reading; None when there is none (yet)."""
        path = os.path.join(directory, INDEX_DIR)
        if not os.path.exists(os.path.join(path, "data.mdb")):
            return None
        try:
            env, dbs = _acquire(path, create=False)
        except lmdb.Error:
            # Missing sub-databases (a writer is creating it) or damaged: the
            # reader falls back to the log until the writer has built it.
            return None
        self = cls(env, dbs, path, writable=False)
        try:
            with env.begin() as txn:
                if txn.get(b"format", db=self.meta) != FORMAT:
                    raise lmdb.Error("not a Hydra index of this format")
        except lmdb.Error:
            self.release()
            return None
        return self

    @classmethod
    def create(cls, directory: str, segment_size: int, name: str = INDEX_DIR) -> PersistentIndex:
        """Create an empty index in ``DIR/name`` (which must not exist)."""
        path = os.path.join(directory, name)
        env, dbs = _acquire(path, create=True)
        self = cls(env, dbs, path, writable=True)
        with env.begin(write=True) as txn:
            txn.put(b"format", FORMAT, db=self.meta)
            txn.put(b"segment", _pack_u64(segment_size), db=self.meta)
            txn.put(b"covered", _pack_u64(0), db=self.meta)
            txn.put(b"tail", TAIL.pack(0), db=self.meta)
            txn.put(b"counts", COUNTS.pack(0, 0, 0), db=self.meta)
            txn.put(b"state", b"clean", db=self.meta)
            txn.put(b"id", _pack_u64(int.from_bytes(os.urandom(8), "little") >> 1),
                    db=self.meta)
            txn.put(b"filter", b"on", db=self.meta)
        return self

    @classmethod
    def open_writer(cls, directory: str, segment_size: int) -> tuple[PersistentIndex | None, str]:
        """Open the existing index for writing; (None, why) when it must be rebuilt."""
        path = os.path.join(directory, INDEX_DIR)
        if not os.path.exists(os.path.join(path, "data.mdb")):
            return None, "there is no index"
        try:
            env, dbs = _acquire(path, create=False)
        except lmdb.Error as exc:
            return None, f"the index cannot be opened ({exc})"
        self = cls(env, dbs, path, writable=True)
        try:
            # Reader slots of processes that died (kill -9) would pin old pages.
            env.reader_check()
            with env.begin() as txn:
                fmt = txn.get(b"format", db=self.meta)
                seg = txn.get(b"segment", db=self.meta)
                state = txn.get(b"state", db=self.meta)
                ok = all(txn.get(k, db=self.meta) is not None
                         for k in (b"covered", b"tail", b"counts"))
        except lmdb.Error as exc:
            self.release()
            return None, f"the index is damaged ({exc})"
        why = ""
        if fmt != FORMAT or not ok:
            why = f"the index has another format ({fmt!r})"
        elif seg is None or _unpack_u64(seg)[0] != segment_size:
            why = "the index belongs to a log of another segment size"
        elif state != b"clean" and state != b"open " + boot_id():
            # Open for writing when the machine went down: unsynced LMDB pages may
            # have reached the disk in any order, so nothing in it can be trusted.
            why = "the index was open when the machine stopped"
        if why:
            self.release()
            return None, why
        return self, ""

    def mark_open(self, *, filter_ok: bool) -> None:
        """Record that the index is being written (durably, before any unsynced commit).

        Without a usable ID filter the filter is switched off for good (until a
        rebuild): IDs indexed from now on would be missing from it.
        """
        with self.env.begin(write=True) as txn:
            txn.put(b"state", b"open " + boot_id(), db=self.meta)
            if not filter_ok:
                txn.put(b"filter", b"off", db=self.meta)
        self.env.sync(True)

    def ident(self) -> int:
        """This index's random ID (its written mark names it: ``hydra.storage.written``)."""
        with self.env.begin() as txn:
            raw = txn.get(b"id", db=self.meta)
        return int(_unpack_u64(raw)[0]) if raw else 0

    def index_id(self) -> int:
        """This index's ID, or 0 when its ID filter is switched off."""
        with self.env.begin() as txn:
            raw = txn.get(b"id", db=self.meta)
            on = txn.get(b"filter", db=self.meta) == b"on"
        return int(_unpack_u64(raw)[0]) if raw and on else 0

    def close(self, *, clean: bool) -> None:
        if self.writable and clean:
            with self.env.begin(write=True) as txn:
                txn.put(b"state", b"clean", db=self.meta)
            # The whole index reaches the disk before it is marked clean on disk.
            self.env.sync(True)
        self.release()

    def replaced(self) -> bool:
        """Has the writer re-created the index since this environment was opened?"""
        try:
            return os.stat(os.path.join(self.path, "data.mdb")).st_ino != self.inode
        except FileNotFoundError:
            return True

    # -- meta ----------------------------------------------------------------------

    def covered(self, txn: lmdb.Transaction | None = None) -> int:
        if txn is None:
            with self.env.begin() as t:
                return int(_unpack_u64(_get(t, b"covered", self.meta))[0])
        return int(_unpack_u64(_get(txn, b"covered", self.meta))[0])

    def covered_and_counts(self) -> tuple[int, tuple[int, int, int]]:
        """The covered position and the counters at it (one snapshot)."""
        with self.env.begin() as txn:
            return self.covered(txn), self.counts(txn)

    def damaged(self) -> dict[bytes, int]:
        """Streams with a record indexed although its CRC failed: key -> position."""
        with self.env.begin() as txn:
            raw = txn.get(b"damaged", db=self.meta)
        out: dict[bytes, int] = {}
        if raw is None:
            return out
        raw = bytes(raw)
        i = 0
        while i + 10 <= len(raw):
            (n,) = struct.unpack_from("<H", raw, i)
            key = raw[i + 2:i + 2 + n]
            (out[key],) = struct.unpack_from("<Q", raw, i + 2 + n)
            i += 10 + n
        return out

    def tail_crc(self) -> int:
        with self.env.begin() as txn:
            return int(TAIL.unpack(_get(txn, b"tail", self.meta))[0])

    def counts(self, txn: lmdb.Transaction | None = None) -> tuple[int, int, int]:
        """(live events, live streams, tombstones) at the index's covered position."""
        if txn is None:
            with self.env.begin() as t:
                return COUNTS.unpack(_get(t, b"counts", self.meta))  # type: ignore[return-value]
        return COUNTS.unpack(_get(txn, b"counts", self.meta))  # type: ignore[return-value]

    # -- queries "as of position P" ------------------------------------------------

    def tracking_at(self, txn: lmdb.Transaction, name: bytes, as_of: int) -> int | None:
        """The highest notification ID tracked for ``name`` before position ``as_of``."""
        prefix = tracking_dbkey(name)
        cur = txn.cursor(db=self.meta)
        # The first entry at or after as_of, then one step back: the last before it.
        found = cur.set_range(prefix + _pack_key64(min(as_of, LATEST)))
        if not (cur.prev() if found else cur.last()):
            return None
        key = cur.key()
        if key[:len(prefix)] != prefix:
            return None
        return int(_I64.unpack(cur.value())[0])

    def stream_at(self, txn: lmdb.Transaction, key: bytes, as_of: int) -> Incarnation:
        """The incarnation of stream ``key`` live at ``as_of`` and its events before it."""
        found = txn.get(stream_dbkey(key), db=self.streams)
        if found is None:
            return _NO_STREAM
        raw = bytes(found)
        inc, count = RECORD.unpack_from(raw)
        history = raw[RECORD.size:]
        if history:
            for i in range(0, len(history), TOMB.size):
                t, old_inc, old_count = TOMB.unpack_from(history, i)
                if t >= as_of:
                    # Deleted after ``as_of``: the incarnation it ended is the live one.
                    inc, count, history = old_inc, old_count, history[:i]
                    break
        if count and as_of < LATEST:
            count = self._count_before(txn, inc, count, as_of)
        return Incarnation(inc, count, bytes(history))

    def snapshots_at(
        self, txn: lmdb.Transaction, key: bytes, as_of: int
    ) -> list[tuple[int, int, int]]:
        """(position, incarnation, version) of the stream's snapshot records the
        index holds before ``as_of``, newest first."""
        raw = txn.get(stream_dbkey(key), db=self.snaps)
        if raw is None:
            return []
        entries: list[tuple[int, int, int]] = list(SNAP.iter_unpack(raw))
        if entries and entries[0][0] >= as_of:
            entries = [e for e in entries if e[0] < as_of]
        return entries

    def metadata_at(
        self, txn: lmdb.Transaction, key: bytes, as_of: int
    ) -> tuple[int, int, int, int] | None:
        """(position, max count, max age, truncate before) of the stream's newest
        metadata record before ``as_of`` (-1: a rule unset), or None."""
        raw = txn.get(stream_dbkey(key), db=self.smeta)
        if raw is None:
            return None
        raw = bytes(raw)
        for i in range(0, len(raw), SMETA.size):
            entry: tuple[int, int, int, int] = SMETA.unpack_from(raw, i)
            if entry[0] < as_of:
                return entry
        return None

    def has_metadata(self, txn: lmdb.Transaction) -> bool:
        """Does any stream have metadata? (Reads skip every retention check when not.)"""
        return bool(txn.stat(self.smeta)["entries"])

    def _count_before(self, txn: lmdb.Transaction, inc: int, count: int, as_of: int) -> int:
        """Events of incarnation ``inc`` (``count`` in all) at positions before ``as_of``."""
        chunks = self.chunks
        last = array("q", _get(txn, _pack_chunk_key(inc, (count - 1) // CHUNK), chunks))
        if last[-1] < as_of:
            return count
        # Positions grow with versions: bisect the chunks by their first position.
        lo, hi = 0, (count - 1) // CHUNK
        while lo < hi:
            mid = (lo + hi + 1) // 2
            first = array("q", _get(txn, _pack_chunk_key(inc, mid), chunks)[:8])[0]
            if first < as_of:
                lo = mid
            else:
                hi = mid - 1
        chunk = array("q", _get(txn, _pack_chunk_key(inc, lo), chunks))
        return lo * CHUNK + bisect_left(chunk, as_of)

    def stream_positions(self, inc: int, lo: int, hi: int) -> array[int]:
        """Positions of versions [lo, hi) of incarnation ``inc`` (all must exist)."""
        out = array("q")
        if lo >= hi:
            return out
        with self.env.begin() as txn:
            chunks = self.chunks
            first = lo // CHUNK
            for c in range(first, (hi - 1) // CHUNK + 1):
                out.frombytes(_get(txn, _pack_chunk_key(inc, c), chunks))
        skip = lo - first * CHUNK
        return out[skip:skip + hi - lo]

    def version_of_id(self, txn: lmdb.Transaction, inc: int, event_id: bytes) -> int | None:
        raw = txn.get(id_dbkey(inc, event_id), db=self.ids)
        return None if raw is None else int(_unpack_u64(raw)[0])

    def position_of(self, txn: lmdb.Transaction, inc: int, version: int) -> int:
        chunk = array("q", _get(txn, _pack_chunk_key(inc, version // CHUNK), self.chunks))
        return chunk[version % CHUNK]

    def all_positions(
        self, start: int | None, as_of: int, backward: bool, batch: int = 16
    ) -> Iterator[array[int]]:
        """Positions of events before ``as_of`` in log order from ``start`` (inclusive).

        Yields arrays of positions (descending when ``backward``), reading ``batch``
        chunks per short read transaction, so a slow consumer pins no snapshot.
        """
        if backward:
            yield from self._all_backward(as_of if start is None else min(as_of, start + 1),
                                          batch)
            return
        lo = 0 if start is None else start
        first = True
        while True:
            taken: list[tuple[bytes, bytes]] = []
            with self.env.begin() as txn:
                cur = txn.cursor(db=self.all)
                if first:
                    # The chunk holding ``start`` begins at or before it.
                    if cur.set_range(_pack_key64(lo)):
                        if cur.key() != _pack_key64(lo) and not cur.prev():
                            cur.first()
                    elif not cur.last():
                        return
                elif not cur.set_range(_pack_key64(lo)):
                    return
                stop = False
                for key, value in cur.iternext():
                    if _unpack_key64(key)[0] >= as_of:
                        stop = True
                        break
                    taken.append((key, value))
                    if len(taken) == batch:
                        break
                else:
                    stop = True
            if not taken:
                return
            out = array("q")
            for _, value in taken:
                out.frombytes(value)
            if first and out[0] < lo:
                del out[:bisect_left(out, lo)]
            if out and out[-1] >= as_of:
                del out[bisect_left(out, as_of):]
            first = False
            if out:
                yield out
            if stop or len(taken) < batch:
                return
            lo = _unpack_key64(taken[-1][0])[0] + 1

    def last_position_before(self, limit: int) -> int:
        """The position of the last indexed event before ``limit``, or -1."""
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.all)
            ok = cur.prev() if cur.set_range(_pack_key64(limit)) else cur.last()
            if not ok:
                return -1
            chunk = array("q", cur.value())
        i = bisect_left(chunk, limit)
        return chunk[i - 1] if i else -1

    # -- ordinals (1-based numbers of events in log order) --------------------------

    def ordinal_at(self, position: int, as_of: int) -> int | None:
        """The ordinal of the event at ``position`` (before ``as_of``), or None."""
        if position >= as_of:
            return None
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.all)
            key = _pack_key64(position)
            if cur.set_range(key):
                if cur.key() != key and not cur.prev():
                    return None
            elif not cur.last():
                return None
            first = bytes(cur.key())
            chunk = array("q", cur.value())
            number = txn.get(ORD_POSITION + first, db=self.ordinals)
        i = bisect_left(chunk, position)
        if i == len(chunk) or chunk[i] != position:
            return None
        if number is None:
            raise lmdb.CorruptedError(f"the index lacks the ordinal of chunk {first!r}")
        return int(_unpack_u64(number)[0]) * CHUNK + i + 1

    def last_ordinal(self, as_of: int) -> int:
        """The ordinal of the last event before ``as_of`` (0: none)."""
        last = self.last_position_before(as_of)
        if last < 0:
            return 0
        ordinal = self.ordinal_at(last, as_of)
        assert ordinal is not None
        return ordinal

    def ordinal_positions(
        self, ordinal: int, as_of: int, batch: int = 16
    ) -> Iterator[tuple[int, array[int]]]:
        """(ordinal of the first, positions) of the events from ``ordinal`` on
        (1-based, inclusive) before ``as_of``, in log order."""
        k, skip = divmod(max(ordinal, 1) - 1, CHUNK)
        with self.env.begin() as txn:
            raw = txn.get(ORD_NUMBER + _pack_key64(k), db=self.ordinals)
        if raw is None:
            return
        next_ordinal = k * CHUNK + 1
        for positions in self.all_positions(int(_unpack_u64(raw)[0]), as_of, False, batch):
            if skip:
                del positions[:skip]
                next_ordinal += skip
                skip = 0
            if positions:
                yield next_ordinal, positions
                next_ordinal += len(positions)

    def _all_backward(self, top: int, batch: int) -> Iterator[array[int]]:
        """Positions below ``top``, descending."""
        while True:
            taken: list[tuple[bytes, bytes]] = []
            with self.env.begin() as txn:
                cur = txn.cursor(db=self.all)
                # The last chunk that begins below ``top``.
                ok = cur.prev() if cur.set_range(_pack_key64(top)) else cur.last()
                if not ok:
                    return
                for item in cur.iterprev():
                    taken.append(item)
                    if len(taken) == batch:
                        break
            out = array("q")
            for _, value in reversed(taken):
                out.frombytes(value)
            if out and out[-1] >= top:
                del out[bisect_left(out, top):]
            out.reverse()
            if out:
                yield out
            if len(taken) < batch:
                return
            top = _unpack_key64(taken[-1][0])[0]

    # -- the stream listing (``hydra.storage.listing``) ----------------------------

    def recent_streams(
        self, as_of: int, before: int, limit: int, exclude: Container[bytes] = (),
    ) -> list[tuple[int, bytes, int]]:
        """Up to ``limit`` streams live at ``as_of`` whose last event is before
        ``before``, newest first, as (last position, stream key, event count).

        One ``recent`` entry per stream, at its last record: the entries below
        ``as_of`` are the answer as they are (a tombstone entry is a deleted
        stream); the few at or after it (written since the reader's committed
        position) are placed where the stream's last event before ``as_of`` was.
        Streams in ``exclude`` (a caller's newer view of them) are left out.
        """
        out: list[tuple[int, bytes, int]] = []
        if limit <= 0:
            return out
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.recent)
            moved: list[tuple[int, bytes, int]] = []
            if as_of < LATEST and cur.set_range(_pack_key64(as_of)):
                for value in cur.iternext(keys=False):
                    key = bytes(value[RECORD.size:])
                    if key in exclude:
                        continue
                    inc, count, _ = self.stream_at(txn, key, as_of)
                    if count:
                        last = self.position_of(txn, inc, count - 1)
                        if last < before:
                            moved.append((last, key, count))
                moved.sort(reverse=True)
            top = min(as_of, before)
            ok = cur.prev() if cur.set_range(_pack_key64(top)) else cur.last()
            i = 0
            if ok:
                unpack = RECORD.unpack_from
                for k, value in cur.iterprev():
                    position = _unpack_key64(k)[0]
                    if position >= top:
                        continue
                    while i < len(moved) and moved[i][0] > position and len(out) < limit:
                        out.append(moved[i])
                        i += 1
                    if len(out) >= limit:
                        return out
                    count = unpack(value)[1]
                    if not count:
                        continue
                    key = bytes(value[RECORD.size:])
                    if key in exclude:
                        continue
                    out.append((position, key, count))
                    if len(out) >= limit:
                        return out
            out.extend(moved[i:i + limit - len(out)])
        return out

    def streams_by_id(
        self, prefix: bytes, after: bytes, as_of: int, limit: int,
        exclude: Container[bytes] = (),
    ) -> list[tuple[int, bytes, int]]:
        """Up to ``limit`` streams live at ``as_of`` whose ID starts with ``prefix``
        and sorts after ``after``, in ID order, as (last position, key, event count).

        A range scan of ``streams`` (keys sort by their bytes). IDs longer than
        MAX_KEY bytes are stored by digest and are not found here.
        """
        out: list[tuple[int, bytes, int]] = []
        if limit <= 0:
            return out
        with self.env.begin() as txn:
            cur = txn.cursor(db=self.streams)
            if not cur.set_range(max(prefix, after)):
                return out
            for k in cur.iternext(values=False):
                key = bytes(k)
                if not key.startswith(prefix):
                    break
                if key == after or key.startswith(b"\0") or key in exclude:
                    continue
                inc, count, _ = self.stream_at(txn, key, as_of)
                if count:
                    out.append((self.position_of(txn, inc, count - 1), key, count))
                    if len(out) >= limit:
                        break
        return out


def remove_index(directory: str, name: str = INDEX_DIR) -> None:
    shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def encode_damaged(damaged: dict[bytes, int]) -> bytes:
    """The ``damaged`` meta entry: [u16 key length][key][u64 position] each."""
    return b"".join(struct.pack("<H", len(k)) + k + struct.pack("<Q", p)
                    for k, p in sorted(damaged.items()))


# How many streams a flush prepares, and how many entries it puts, per step.
STEP_STREAMS = 128
STEP_ITEMS = 1024


def flush_steps(index: PersistentIndex, pending: Index, covered: int, tail_crc: int,
                damaged: bytes | None = None) -> Generator[None, None, None]:
    """Write ``pending`` (everything indexed since the last flush) in one
    transaction, in steps: yields after every STEP_STREAMS streams prepared and
    STEP_ITEMS entries put (a fraction of a millisecond each), and commits when
    it is run to its end. Closing it before then aborts the transaction: the
    index stays as it was. Its caller keeps ``pending`` unchanged meanwhile.

    The covered position and counters go in the same transaction as the entries,
    so the index on disk always describes exactly the log before ``covered``.
    Entries are sorted and written with ``putmulti`` (one C loop per table, in
    key order: B-tree pages are filled in sequence instead of at random).
    """
    env = index.env
    with env.begin(write=True) as txn:
        chunks = index.chunks
        stream_items: list[tuple[bytes, bytes]] = []
        chunk_items: list[tuple[bytes, bytes]] = []
        id_items: list[tuple[bytes, bytes]] = []
        recent_items: list[tuple[bytes, bytes]] = []
        add_stream = stream_items.append
        add_id = id_items.append
        pack_record = RECORD.pack
        tombstones = pending.tombstones
        for n, (key, st) in enumerate(_touched(pending), 1):
            if not n % STEP_STREAMS:
                yield
            new = st.positions
            base = st.base
            if base == 0 and new:
                st.inc = new[0]
            inc = st.inc
            # (The position of the last event already indexed, when extending a
            # partial chunk reads it anyway: -1 otherwise.)
            last_indexed = _chunk_items(txn, chunks, inc, base, new, chunk_items) if new else -1
            if key:
                dbkey = key if len(key) <= MAX_KEY else stream_dbkey(key)
                _move_recent(txn, index, dbkey, key, st, tombstones.get(key, -1), recent_items,
                             last_indexed)
                add_stream((dbkey, pack_record(inc, base + len(new)) + st.history))
            if st.ids:
                pk = _pack_key64(inc)
                for eid, v in st.ids.items():
                    add_id((pk + eid if len(eid) <= MAX_KEY else id_dbkey(inc, eid),
                            _pack_u64(v)))
        for db, items in ((index.streams, stream_items), (chunks, chunk_items),
                          (index.ids, id_items), (index.recent, recent_items)):
            if items:
                items.sort()
                yield
                cursor = txn.cursor(db=db)
                for i in range(0, len(items), STEP_ITEMS):
                    cursor.putmulti(items[i:i + STEP_ITEMS])
                    yield
        put_snapshots(txn, index.snaps, pending.snapshots)
        _put_newest(txn, index.smeta, SMETA, pending.metadata)
        new_all = pending.all_positions
        if new_all:
            _append_all(txn, index.all, index.ordinals, new_all)
        yield
        put = txn.put
        for name, (notification_id, position) in pending.tracking.items():
            put(tracking_dbkey(name) + _pack_key64(position), _I64.pack(notification_id),
                db=index.meta)
        events, streams, tombstones = COUNTS.unpack(_get(txn, b"counts", index.meta))
        put(b"counts", COUNTS.pack(events + pending.event_count, streams + pending.stream_delta,
                                   tombstones + pending.tombstone_count), db=index.meta)
        put(b"covered", _pack_u64(covered), db=index.meta)
        put(b"tail", TAIL.pack(tail_crc), db=index.meta)
        if damaged is not None:
            put(b"damaged", damaged, db=index.meta)


def put_snapshots(txn: lmdb.Transaction, db: Any,
                  pending: Mapping[bytes, list[tuple[int, int, int]]]) -> None:
    """Add each stream's new snapshot records (oldest first) to its history,
    trimmed to what readers need (``snapshot_history.trim``)."""
    pack = SNAP.pack
    for key, new in sorted(pending.items()):
        dbkey = stream_dbkey(key)
        old = txn.get(dbkey, db=db)
        stored = list(SNAP.iter_unpack(old)) if old else []
        entries = trim(newest_first(new, stored))
        txn.put(dbkey, b"".join([pack(*e) for e in entries]), db=db)


def _put_newest(txn: lmdb.Transaction, db: Any, fmt: struct.Struct,
                entries: Mapping[bytes, tuple[int, ...]]) -> None:
    """Store each stream's newest entry (a metadata record), keeping the one
    before it too, for readers as of a position before the newest."""
    for key, entry in sorted(entries.items()):
        dbkey = stream_dbkey(key)
        old = txn.get(dbkey, db=db)
        txn.put(dbkey, fmt.pack(*entry) + (bytes(old[:fmt.size]) if old else b""), db=db)


def _move_recent(
    txn: lmdb.Transaction, index: PersistentIndex, dbkey: bytes, key: bytes,
    st: StreamState, tombstone: int, out: list[tuple[bytes, bytes]], last_indexed: int = -1,
) -> None:
    """Move the stream's ``recent`` entry to its last record now (before the
    stream's own entry is rewritten: the old one says where the old record was).
    ``last_indexed``: the position of the incarnation's last event in the index,
    when the caller has it (-1: looked up here)."""
    base = st.base
    last = -1
    if base:
        # Events of this incarnation are in the index: the last of them is its entry.
        if last_indexed >= 0:
            last = last_indexed
        else:
            chunk = _get(txn, _pack_chunk_key(st.inc, (base - 1) // CHUNK), index.chunks)
            last = _unpack_q(chunk, ((base - 1) % CHUNK) * 8)[0]
    elif st.history:
        # Deleted (here or before): the entry is at the last record of what the index has.
        old = txn.get(dbkey, db=index.streams)
        if old is not None:
            last = _last_record(txn, index.chunks, bytes(old))
    # (Neither: a stream new to the index, which has no entry for it.)
    if last >= 0:
        txn.delete(_pack_key64(last), db=index.recent)
    new = st.positions
    last = max(new[-1] if new else -1, tombstone)
    if last >= 0:
        count = st.base + len(new)
        out.append((_pack_key64(last), RECORD.pack(st.inc if count else -1, count) + key))


def _last_record(txn: lmdb.Transaction, chunks: Any, raw: bytes) -> int:
    """The position of the last record (event or tombstone) of a ``streams`` value."""
    inc, count = RECORD.unpack_from(raw)
    if count:
        chunk = _get(txn, _pack_chunk_key(inc, (count - 1) // CHUNK), chunks)
        return int(array("q", chunk)[(count - 1) % CHUNK])
    if len(raw) > RECORD.size:
        return int(TOMB.unpack_from(raw, len(raw) - TOMB.size)[0])
    return -1


def _touched(pending: Index) -> Iterator[tuple[bytes, StreamState]]:
    """What a flush writes: ended incarnations (entries only, key b""), then streams."""
    for st in pending.ended:
        yield b"", st
    for key, st in pending.streams.items():
        if st.positions or st.touched:
            yield key, st


def _chunk_items(
    txn: lmdb.Transaction, db: Any, inc: int, base: int, new: array[int],
    out: list[tuple[bytes, bytes]],
) -> int:
    """The chunk entries for versions base.. of ``inc`` (a partial first chunk is
    extended). Returns the position of version base - 1 when that partial chunk
    holds it, else -1."""
    r = base % CHUNK
    c = base // CHUNK
    n = len(new)
    last = -1
    if r:
        key = _pack_chunk_key(inc, c)
        old = _get(txn, key, db)
        last = _unpack_q(old, (r - 1) * 8)[0]
        take = min(CHUNK - r, n)
        out.append((key, old + (new.tobytes() if take == n else new[:take].tobytes())))
        i = take
        c += 1
    else:
        i = 0
    while i < n:
        take = min(CHUNK, n - i)
        out.append((_pack_chunk_key(inc, c), new[i:i + take].tobytes()))
        i += take
        c += 1
    return int(last)


def _append_all(txn: lmdb.Transaction, db: Any, ordinals: Any, new: array[int]) -> None:
    cur = txn.cursor(db=db)
    i = 0
    n = len(new)
    if cur.last():
        value = cur.value()
        room = CHUNK - len(value) // 8
        if room > 0:
            take = min(room, n)
            cur.put(cur.key(), bytes(value) + new[:take].tobytes())
            i = take
    items = []
    while i < n:
        part = new[i:i + CHUNK]
        items.append((_pack_key64(part[0]), part.tobytes()))
        i += CHUNK
    if items:
        cur.putmulti(items, append=True)
        # Number the new chunks (the last ``ordinals`` entry is the newest b"p" one).
        ocur = txn.cursor(db=ordinals)
        k = _unpack_u64(ocur.value())[0] + 1 if ocur.last() else 0
        by_number = []
        by_position = []
        for key, _ in items:
            by_number.append((ORD_NUMBER + _pack_key64(k), _pack_u64(_unpack_key64(key)[0])))
            by_position.append((ORD_POSITION + key, _pack_u64(k)))
            k += 1
        ocur.putmulti(by_number)
        ocur.putmulti(by_position, append=True)
