"""The writer process: owns the log, serves the command socket, publishes the feed.

One blocking loop over a ZeroMQ poller owns the engine. Each turn that finds
requests is one group:

1. drain every request already queued on the command socket (bounded);
2. handle each one on the engine, in arrival order (validation, idempotency,
   limits; the records go into the log and the index at once, so later
   requests of the group see earlier ones; a rejected request affects nothing
   else);
3. fsync once if the durability mode (or a request's sync flag) says so;
4. reply to every request, each reply carrying the new committed position;
5. publish the committed position on the feed.

The fsync of step 3 runs on a helper thread (``_syncer``) so the loop can take
the next group meanwhile: groups written during an fsync wait for the next
one, which covers them all. A group's replies leave only once everything
written before its end is durable (in every-write mode), so even a duplicate
or a conflict is never reported from state a crash could undo.

Between groups the loop sends heartbeats and the timed fsyncs of the async
modes. SIGTERM/SIGINT only set a flag (and wake the poller); the loop finishes
the groups in flight, answers requests still queued with "unavailable", syncs,
releases the lock and returns 0.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from types import FrameType
from typing import Any

import lmdb
import zmq

from hydra import _curve, _metrics
from hydra._gc import settle as settle_gc
from hydra._gc import state as gc_state
from hydra.storage.engine import Engine
from hydra.storage.lock import DirectoryLock
from hydra._protocol import (
    PROTOCOL_VERSION,
    FeedMessage,
    encode_feed,
    ensure_run_dir,
    error_reply,
    packb,
    unpackb,
    writer_socket,
)
from hydra.storage.recovery import recover
from hydra.storage.indexer import WriterIndex
from hydra.storage.segments import SegmentSet
from hydra.errors import CorruptLog, StorageError, StorageFailed, Unavailable
from hydra.store import open_data_dir
from hydra.writer._commands import CommandHandler, Reply
from hydra.writer._scavenging import ScavengeThread
from hydra.writer._durability import SyncPolicy
from hydra.writer._syncer import Syncer
from hydra.writer._tally import WriterTally
from hydra.writer.config import WriterConfig

log = logging.getLogger("hydra.writer")

# Bounds on one group, so a flood of requests cannot make one group (and the
# latency of everything in it) arbitrarily large.
MAX_GROUP_MESSAGES = 4096
MAX_GROUP_BYTES = 64 << 20
# The persistent index is written at once after a quiet spell, and under a steady
# load at most once every INDEX_FLUSH_SECONDS (_index_may_wait): the commits in
# between are announced while the index covers less than them, and readers read
# the log after what it covers (as they always can). Each flush rewrites, per
# stream it touches, the stream's record, its last position chunk and its
# ``recent`` entry, so fewer, larger flushes write each stream's pages once for
# many of its events. A flush also starts once INDEX_FLUSH_EVENTS events wait
# unindexed, and happens at once (not in steps) past 4 x INDEX_FLUSH_EVENTS:
# that bounds the writer's pending entries, the tail every reader scans, and the
# tail a restart after a crash indexes.
INDEX_FLUSH_EVENTS = 8192
INDEX_FLUSH_SECONDS = 0.2
# A flush that waited runs in steps of about INDEX_STEP_SECONDS between groups
# (WriterIndex.start_flush): requests are handled, synced and answered while it
# runs, instead of waiting for all of it.
INDEX_STEP_SECONDS = 0.001
# Least time between two feed messages that announce commits (seconds). A
# commit after a quiet spell is announced at once; under load the positions of
# the groups committed meanwhile go out together in one message at the end of
# the interval. Every feed message wakes every gateway (and every other
# subscriber); under load the writer commits a group every fraction of a
# millisecond, and each gateway already knows its own appends' positions from
# the replies, so announcing each one cost the gateways more than the appends'
# own trip to the writer.
FEED_INTERVAL = 0.002


class WriterServer:
    """The writer process's state: data directory, engine, sockets, counters."""

    def __init__(self, config: WriterConfig) -> None:
        self.config = config
        directory, manifest = open_data_dir(config.data_dir, config.segment_size, create=True)
        self.directory = directory
        self._lock = DirectoryLock(directory)
        self._context: zmq.Context[Any] | None = None
        self._segments: SegmentSet | None = None
        self._bound: list[str] = []
        self._syncer: Syncer | None = None
        self._auth: Any = None  # the CURVE authenticator thread, if any
        self._index: WriterIndex | None = None
        self._clean = False
        try:
            self._open(manifest.segment_size)
        except BaseException:
            self._close_all()
            raise

    def _open(self, segment_size: int) -> None:
        config = self.config
        started = time.monotonic()
        self._segments = SegmentSet(self.directory, segment_size, writable=True)
        self._index, end = recover(self._segments)
        self.engine = Engine(self._segments, self._index, config.limits, end)
        self.recovery_seconds = time.monotonic() - started
        self.committed = end
        self.synced = end
        self.policy = SyncPolicy(config.sync, config.sync_interval, config.sync_batch)
        self._scavenging = ScavengeThread(self._segments, self._index.persistent,
                                          self._scavenge_bounds)
        self.handler = CommandHandler(self.engine, self.health, self._request_scavenge)
        self._next_scavenge = (time.monotonic() + config.scavenge_interval
                               if config.scavenge_interval else None)
        self.writer_id = int.from_bytes(os.urandom(8), "big") >> 1
        self.started = time.monotonic()
        self.groups = 0
        self.fsyncs = 0
        self._seq = 0
        self._published = -1
        self._next_heartbeat = 0.0
        self._last_feed = float("-inf")  # time.monotonic() of the last feed message
        self._feed_due: float | None = None  # when the next commit announcement is due
        self._stop = False
        self._index_failing = False
        self._mark_failing = False
        self._last_index_flush = float("-inf")  # time.monotonic() of the last index flush
        self._index_due: float | None = None  # when a flush that waits must happen
        # Groups whose replies wait for an fsync: (log end it must cover, frames, replies).
        self._waiting: list[tuple[int, list[list[bytes]], list[Reply | list[Reply]]]] = []
        self._syncer = Syncer()
        ensure_run_dir(self.directory)
        self.metrics = _metrics.series()
        # Groups, records, fsyncs and the committed position, written into the
        # series from the loop at most every 0.1 s (_tally.py), not per group.
        self.tally = WriterTally(self.metrics, config.metrics_flush)
        # Records written since the last fsync started, and those the running one covers.
        self._unsynced_records = 0
        self._syncing_records = 0
        self._context = zmq.Context()
        self.router = writer_socket(self._context, "command")
        self.pub = writer_socket(self._context, "feed")
        if config.zmq_curve:
            self._auth = _curve.serve(self._context, [self.router, self.pub], self.directory)
        for sock, endpoint in ((self.router, config.command_endpoint),
                               (self.pub, config.feed_endpoint)):
            try:
                sock.bind(endpoint)
            except zmq.ZMQError as exc:
                raise StorageError(f"cannot bind {endpoint}: {exc}") from None
            self._bound.append(endpoint)

    # -- the loop ------------------------------------------------------------------

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (returns 0) or a storage failure (returns 1)."""
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # A signal interrupts the poll through this pipe; the handler itself only
        # sets a flag (signal handlers run between bytecodes, the loop acts on it).
        old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        poller = zmq.Poller()
        poller.register(self.router, zmq.POLLIN)
        poller.register(wake_r, zmq.POLLIN)
        syncer = self._syncer
        assert syncer is not None
        sync_done = syncer.fileno()
        poller.register(sync_done, zmq.POLLIN)
        log.info(
            "writer ready: data=%s committed=%d sync=%s command=%s feed=%s "
            "(recovery %.3f s, %d events in %d streams)",
            self.directory, self.committed, self.config.sync, self.config.command_endpoint,
            self.config.feed_endpoint, self.recovery_seconds, *self._index_counts(),
        )
        self._publish(heartbeat=True)
        settle_gc()  # (hydra/_gc.py) the recovered state and start-up stay for good
        policy = self.policy
        tally = self.tally
        try:
            while not self._stop:
                now = time.monotonic()
                wait = self._next_heartbeat - now
                if policy.deadline is not None and not syncer.busy:
                    # (While an fsync runs, its completion wakes the poller.)
                    wait = min(wait, policy.deadline - now)
                if self._feed_due is not None:
                    wait = min(wait, self._feed_due - now)
                if tally.due is not None:
                    wait = min(wait, tally.due - now)
                if self._index_due is not None:
                    wait = min(wait, self._index_due - now)
                if self._index_stepping():
                    wait = 0
                ready = dict(poller.poll(max(0, int(wait * 1000) + 1) if wait > 0 else 0))
                if wake_r in ready:
                    _drain_pipe(wake_r)
                if sync_done in ready:
                    self._synced_one()
                if self.router in ready:
                    self._group()
                now = time.monotonic()
                if policy.due(now):
                    self._start_sync()
                if self._feed_due is not None and now >= self._feed_due:
                    self._publish(heartbeat=False)
                if now >= self._next_heartbeat:
                    self._publish(heartbeat=True)
                    self._background_scavenge(now)
                if tally.due is not None and now >= tally.due:
                    tally.flush()
                if self._index_stepping():
                    self._step_index()
                elif self._index_due is not None and now >= self._index_due:
                    self._flush_index(self.engine.end, in_steps=True)
            return self._shutdown()
        finally:
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_wakeup)
            os.close(wake_r)
            os.close(wake_w)
            self._close_all()

    # -- scavenging (hydra/writer/_scavenging.py) ------------------------------------

    def _scavenge_bounds(self) -> tuple[int, int]:
        """(position a scavenge may decide on, segment being written), read by the
        scavenger thread: synced and indexed, so no removal rests on a record a
        crash could undo."""
        assert self._index is not None
        return min(self.synced, self._index.covered), self.engine.log.segment

    def _request_scavenge(self) -> int:
        """Start (or queue) a scavenge, after writing the index: a run decides
        only on what the index covers (_scavenge_bounds), and what was deleted
        before the request must be part of it."""
        assert self._index is not None
        self._flush_index(self.engine.end)
        return self._scavenging.request()

    def _background_scavenge(self, now: float) -> None:
        """Start a scavenge every --scavenge-interval (checked at each heartbeat)."""
        if self._next_scavenge is None or now < self._next_scavenge:
            return
        self._next_scavenge = now + self.config.scavenge_interval  # type: ignore[operator]
        if not self._scavenging.scavenger.progress.running and self.handler.failure is None:
            self._request_scavenge()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop = True

    def _group(self) -> None:
        """One group commit: drain, handle, sync, reply, publish."""
        recv = self.router.recv_multipart
        messages: list[list[bytes]] = []
        size = 0
        while len(messages) < MAX_GROUP_MESSAGES and size < MAX_GROUP_BYTES:
            try:
                frames = recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            messages.append(frames)
            size += len(frames[-1])
        if not messages:
            return
        handler = self.handler
        started = self.engine.end
        if handler.failure is None:
            self._check_active_segment()
        handler.written = 0
        handler.sync_requested = False
        handle = handler.handle_body
        replies = [handle(frames[-1]) for frames in messages]
        self.groups += 1
        tally = self.tally
        tally.groups += 1
        if handler.written:
            tally.records += handler.written
            self._unsynced_records += handler.written
        if tally.due is None:
            tally.changed(time.monotonic())
        policy = self.policy
        end = self.engine.end
        # The index may cover more than readers are told is committed (they
        # filter by the committed position, so an index ahead of the fsync is
        # safe), and under a steady load less (_index_may_wait: they read the
        # log after it). With every-write the flush waits for the fsync that
        # covers the group (_synced_one), so the groups handled while one fsync
        # runs go into the index in one transaction; the async modes and a
        # group that wrote nothing decide here. A failure, or far too many
        # events waiting, flush at once; enough of them start a flush in steps.
        assert self._index is not None
        waiting = len(self._index.pending.all_positions)
        if handler.failure is not None or waiting >= 4 * INDEX_FLUSH_EVENTS:
            self._flush_index(end)
        else:
            if waiting >= INDEX_FLUSH_EVENTS and self._index.flushing is None:
                self._flush_index(end, in_steps=True)
            if not policy.every_write or end <= self.synced:
                self._index_commit(end)
        if handler.written:
            policy.wrote(handler.written, time.monotonic())
            if not policy.every_write:
                # Async modes: readers see a write once it is written.
                self.committed = end
        if handler.failure is not None:
            if end > started:
                # The log failed in this group after some of it was written:
                # nothing will sync that, so the outcome of its writes is unknown.
                self._waiting.append((end, messages, replies))
                self._fail_waiting()
            else:
                # Refusals and health answers: nothing of the group is in the log.
                self._send(messages, replies)
        elif policy.sync_before_reply(handler.sync_requested) and end > self.synced:
            # Replies wait for the fsync that covers this group (and everything
            # before it); the next group is handled while it runs.
            self._waiting.append((end, messages, replies))
            self._start_sync(inline=True)
        else:
            self._send(messages, replies)
        self._announce()

    def _check_active_segment(self) -> None:
        """Refuse writes if the segment being written was cut short under the
        writer (writing or reading its map past the end would be a SIGBUS)."""
        assert self._segments is not None
        try:
            self._segments.check_one(self.engine.log.segment)
        except CorruptLog as exc:
            self.handler.fail(StorageFailed(f"{exc}; the log takes no more writes"))

    def _index_may_wait(self) -> bool:
        """May the index flush of a commit wait (for a later commit, or the timer
        of the run loop)? Not after a quiet spell (nothing waited since a flush
        INDEX_FLUSH_SECONDS ago or more): that commit is in the index before
        anyone is told of it. Under a steady load a flush that is due begins in
        steps here, if the loop's timer did not begin it yet. A failing index is
        retried at every commit."""
        if self._index_failing or self._mark_failing:
            return False
        index = self._index
        assert index is not None
        if index.flushing is None:
            now = time.monotonic()
            if self._index_due is None:
                due = self._last_index_flush + INDEX_FLUSH_SECONDS
                if now >= due:
                    return False
                self._index_due = due
            elif now >= self._index_due:
                self._flush_index(self.engine.end, in_steps=True)
        return True

    def _index_stepping(self) -> bool:
        """Is a flush in steps going on (and not failing: a failed one is written
        again by the flush of the next commit)?"""
        assert self._index is not None
        return self._index.flushing is not None and not self._index_failing

    def _step_index(self) -> None:
        assert self._index is not None
        try:
            self._index.step(INDEX_STEP_SECONDS)
        except (OSError, lmdb.Error) as exc:
            self._index_failed(exc, self.engine.end)

    def _index_commit(self, end: int) -> None:
        """The log is written up to ``end`` and about to be announced: flush the
        index now, or (under a steady load) move the written mark to ``end`` and
        let the flush wait, so recovery's checkpoint still covers every commit
        anyone is told of (hydra/storage/written.py)."""
        if self._index_may_wait():
            self._mark_written(end)
        else:
            self._flush_index(end)

    def _mark_written(self, end: int) -> None:
        assert self._index is not None
        try:
            self._index.mark_written(end)
        except OSError as exc:
            # Nothing may be announced past the checkpoint: the index covers it
            # at every commit from now on (_index_may_wait).
            self._mark_failing = True
            log.error("the written mark cannot be written (%s); the index is written at "
                      "every commit instead", exc)
            self._flush_index(end)

    def _flush_index(self, end: int, *, in_steps: bool = False) -> None:
        """Write what waits into the index, covering the log up to ``end``: now,
        or (``in_steps``) in a flush in steps that begins now (_step_index)."""
        assert self._index is not None
        self._index_due = None
        self._last_index_flush = time.monotonic()
        try:
            if in_steps:
                self._index.start_flush(end)
            else:
                self._index.flush(end)
        except (OSError, lmdb.Error) as exc:
            self._index_failed(exc, end)
        else:
            if self._index_failing and not in_steps:
                log.warning("the index is written again")
                self._index_failing = False

    def _index_failed(self, exc: Exception, end: int) -> None:
        """Out of space (or another failure) in the index, not the log: the log
        holds what was written and is the truth (readers read past the index's
        covered position from the log; recovery indexes it, and the written mark
        keeps its checkpoint). What waited stays and goes in with the next flush
        that works: every commit tries one until then (_index_may_wait)."""
        assert self._index is not None
        if not self._index_failing:
            log.error("the index cannot be written (%s); retrying at each later flush, "
                      "reads fall back to the log meanwhile", exc)
        self._index_failing = True
        try:
            self._index.mark_written(end)
        except OSError:
            pass  # (the index's own failure is logged above)

    def _send(self, messages: list[list[bytes]], replies: list[Reply | list[Reply]]) -> None:
        committed = self.committed
        send = self.router.send_multipart
        for frames, reply in zip(messages, replies):
            if isinstance(reply, dict):
                reply["committed"] = committed
            else:
                for r in reply:
                    r["committed"] = committed
            frames[-1] = packb(reply)
            send(frames)

    def _start_sync(self, *, inline: bool = False) -> None:
        """Start an fsync of everything written so far, unless one is running.

        With ``inline``, when no request is queued behind the group and the disk
        syncs fast, the fsync runs here and its groups are answered at once
        (``Syncer.sync_here``): nothing could be handled meanwhile anyway.
        """
        syncer = self._syncer
        assert syncer is not None
        end = self.engine.end
        if syncer.busy or end <= self.synced or self.handler.failure is not None:
            return
        # Only the segment holding the end can be unsynced: the log syncs a
        # segment before it starts writing the next one.
        assert self._segments is not None
        self._syncing_records, self._unsynced_records = self._unsynced_records, 0
        fd = self._segments.fd((end - 1) // self._segments.segment_size)
        if inline and syncer.fast and not int(self.router.getsockopt(zmq.EVENTS)) & zmq.POLLIN:
            self._synced_one(syncer.sync_here(fd, end))
        else:
            syncer.start(fd, end)

    def _synced_one(self, result: tuple[int, OSError | None] | None = None) -> None:
        """An fsync finished: release the groups it covers, publish, start the next."""
        syncer = self._syncer
        assert syncer is not None
        end, error = result or syncer.finish()
        waiting = self._waiting
        tally = self.tally
        if error is not None:
            # After a failed fsync the kernel may have dropped (or kept, marked
            # clean) the pages it could not write: what is on disk after the last
            # good fsync is unknown, and a retry that succeeds would prove nothing.
            # The writer stays up for health and the groups' answers, refuses
            # every later write, and leaves what survived to the recovery of the
            # next start.
            self.metrics.fsync_failures.inc()
            failure = StorageFailed(
                f"fsync of the log failed ({error.strerror or error}); the log takes no "
                "more writes until the writer is restarted (what was acknowledged "
                "before is safe)"
            )
            self.handler.fail(failure)
            self._fail_waiting()
            return
        self.fsyncs += 1
        tally.fsync_seconds.append(syncer.duration)
        tally.events_per_fsync.append(self._syncing_records)
        if tally.due is None:
            tally.changed(time.monotonic())
        self.synced = end
        policy = self.policy
        if policy.every_write:
            # Everything handled so far, the groups after this fsync's end
            # included, before the replies and the feed tell anyone (_group);
            # under a steady load at the next flush that is due (_index_may_wait).
            self._index_commit(self.engine.end)
            self.committed = end
        policy.synced()
        if self.engine.end > end:
            policy.wrote(1, time.monotonic())
        done = 0
        while done < len(waiting) and waiting[done][0] <= end:
            _, messages, replies = waiting[done]
            self._send(messages, replies)
            done += 1
        del waiting[:done]
        self._announce()
        if self.handler.failure is not None:
            self._fail_waiting()
        elif waiting or (policy.every_write and self.engine.end > self.synced):
            self._start_sync()

    def _fail_waiting(self) -> None:
        """Answer every group still waiting for an fsync that will not come."""
        failure = self.handler.failure
        for _, messages, replies in self._waiting:
            self._send(messages, [_failed(r, failure) for r in replies])
        self._waiting.clear()

    def _announce(self) -> None:
        """Publish a new committed position now, or at the end of the feed interval."""
        if self.committed <= self._published or self._feed_due is not None:
            return
        now = time.monotonic()
        if now >= self._last_feed + FEED_INTERVAL:
            self._publish(heartbeat=False, now=now)
        else:
            self._feed_due = self._last_feed + FEED_INTERVAL

    def _publish(self, *, heartbeat: bool, now: float | None = None) -> None:
        if heartbeat and self._index is not None:
            # Free the reader slots of reader processes that died (kill -9):
            # a dead reader's snapshot would keep the index from reusing pages.
            self._index.persistent.env.reader_check()
            self._sample_log()
        self._seq += 1
        committed = self.committed
        self.pub.send(encode_feed(FeedMessage(self._seq, committed, self.writer_id, heartbeat)))
        self._published = committed
        self._last_feed = time.monotonic() if now is None else now
        tally = self.tally
        if committed != tally.committed:
            tally.committed = committed
            tally.changed(self._last_feed)
        self._feed_due = None
        self._next_heartbeat = self._last_feed + self.config.heartbeat_interval

    def _sample_log(self) -> None:
        """The log's size for the metrics (once a heartbeat: a directory scan)."""
        size = segments = 0
        with os.scandir(self.directory) as entries:
            for entry in entries:
                if entry.name.startswith("hydra-") and entry.name.endswith(".log"):
                    segments += 1
                    size += entry.stat().st_blocks * 512
        self.metrics.log_bytes.set(size)
        self.metrics.log_segments.set(segments)
        m, p = self.metrics, self._scavenging.scavenger.progress
        m.scavenge_running.set(1 if p.running else 0)
        m.scavenge_segment.set(p.segment)
        m.scavenge_segments.set(p.segments)
        m.scavenge_reclaimed.set(p.bytes_reclaimed)
        m.scavenge_runs.set(p.runs)

    def _index_counts(self) -> tuple[int, int]:
        assert self._index is not None
        return self._index.counts()

    def health(self) -> dict[str, Any]:
        events, streams = self._index_counts()
        return {
            "status": "ok" if self.handler.failure is None else "failing",
            # "ok", or why appends are refused now (out of space, failed log).
            "storage": self.handler.storage,
            "committed_position": self.committed,
            "synced_position": self.synced,
            "events": events,
            "streams": streams,
            "uptime": round(time.monotonic() - self.started, 3),
            "sync_mode": self.config.sync,
            "requests": self.handler.requests,
            "errors": self.handler.errors,
            "groups": self.groups,
            "fsyncs": self.fsyncs,
            "index_flushes": self._index.flushes if self._index is not None else 0,
            "index_flushes_in_steps": (self._index.flushes_in_steps
                                       if self._index is not None else 0),
            # The log position the index covers, and whether a flush (in steps,
            # between groups) is writing more of it.
            "index_covered": self._index.covered if self._index is not None else 0,
            "index_flushing": self._index is not None and self._index.flushing is not None,
            "segment_size": self.engine.log.segment_size,
            "writer": self.writer_id,
            "pid": os.getpid(),
            "protocol": PROTOCOL_VERSION,
            "scavenge": self._scavenging.progress,
            "gc": gc_state(),
        }

    # -- shutdown ------------------------------------------------------------------

    def _shutdown(self) -> int:
        failed = self.handler.failure is not None
        log.info("writer stopping (%s)", "storage failure" if failed else "signal")
        # Stop taking requests: whatever is still queued is refused, not run, so
        # its sender knows it did not happen.
        gone = Unavailable("the writer is shutting down")
        for _ in range(MAX_GROUP_MESSAGES):
            try:
                frames = self.router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            frames[-1] = packb(_refusal(frames[-1], gone, self.committed))
            self.router.send_multipart(frames)
        # Finish the groups in flight: their fsync, then one for anything after.
        syncer = self._syncer
        assert syncer is not None
        while True:
            if syncer.busy:
                self._synced_one(syncer.wait())
            elif self.handler.failure is None and self.engine.end > self.synced:
                self._start_sync()
            else:
                break
        # Left waiting only when the log failed: their outcome is unknown.
        self._fail_waiting()
        failed = self.handler.failure is not None
        if not failed:
            self._flush_index(self.engine.end)
            self._clean = not self._index_failing
            self._publish(heartbeat=False)
        # What the last groups and fsyncs counted, before the process ends (a
        # failure here must not keep the writer from releasing the log).
        try:
            self.tally.flush()
        except Exception:
            log.exception("could not write the last metrics")
        log.info("writer stopped: committed=%d synced=%d", self.committed, self.synced)
        return 1 if failed else 0

    def _close_all(self) -> None:
        if self._context is not None:
            # Closing lingers (SOCKETS table) so the last replies still leave.
            for name in ("router", "pub"):
                sock = getattr(self, name, None)
                if sock is not None:
                    sock.close()
            if self._auth is not None:
                self._auth.stop()
                self._auth = None
            self._context.term()
            self._context = None
        for endpoint in self._bound:
            if endpoint.startswith("ipc://"):
                # Only sockets this writer bound (never those of a writer that
                # holds the lock while this one failed to start).
                try:
                    os.unlink(endpoint[len("ipc://"):])
                except FileNotFoundError:
                    pass
        self._bound = []
        scavenging = getattr(self, "_scavenging", None)
        if scavenging is not None:
            # It reads the maps and the index closed below.
            scavenging.close()
        if self._syncer is not None:
            self._syncer.close()
            self._syncer = None
        if self._index is not None:
            self._index.close(clean=self._clean)
            self._index = None
        if self._segments is not None:
            self._segments.close()
            self._segments = None
        self._lock.release()


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _failed(reply: Reply | list[Reply], failure: Exception | None) -> Reply | list[Reply]:
    """The reply of a request whose group could not be synced."""
    err = StorageFailed(f"{failure}; this write may or may not survive a restart")
    if isinstance(reply, list):
        return [error_reply(r["id"], err) for r in reply]
    return error_reply(reply["id"], err)


def _refusal(body: bytes, exc: Exception, committed: int) -> Reply | list[Reply]:
    """Refuse every request of a message body with ``exc``, echoing their IDs."""
    try:
        doc = unpackb(body)
    except Exception:  # noqa: BLE001 - msgpack raises many types; garbage must not crash us
        doc = None
    if type(doc) is tuple:
        out = []
        for req in doc:
            rid = req.get("id") if type(req) is dict else None
            out.append(error_reply(rid if type(rid) is int else None, exc) | {"committed": committed})
        return out
    rid = doc.get("id") if type(doc) is dict else None
    return error_reply(rid if type(rid) is int else None, exc) | {"committed": committed}
