"""The storage engine: the log on disk and the index over it.

One idea per module, from bytes up:

- ``format``: record framing and the event envelope (bytes <-> records, no I/O)
- ``manifest``: the data directory's manifest (format version, segment size)
- ``lock``: the directory lock that admits one writer
- ``segments``: segment files, their creation and memory maps
- ``log``: the append side of the log (where the next record goes, rotation, sync)
- ``recovery``: finding the end of the log on open, discarding a torn tail
- ``index``: streams, event IDs and log-order positions, and the scan that builds them
- ``engine``: validation, expected versions, idempotency; writes records
- ``group_commit``: fsync rounds shared by concurrent appenders
- ``reads``: ``read_stream`` / ``read_all`` shared by the Store and the read-only view
- ``verify``: ``hydra verify``

Nothing here is public API: ``hydra`` (the embedded Store), ``hydra.writer`` and
``hydra.readers`` are built on it.
"""
