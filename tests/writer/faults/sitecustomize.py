"""Fault injection for tests: loaded by Python at start-up when this directory is
on PYTHONPATH. While the file named by HYDRA_TEST_FAIL_FSYNC exists, fdatasync
and fsync fail with EIO, as they do when a disk stops accepting writes; the
writer itself runs unchanged."""

import errno
import os

_TRIGGER = os.environ.get("HYDRA_TEST_FAIL_FSYNC")

if _TRIGGER:
    _fdatasync = os.fdatasync
    _fsync = os.fsync

    def _failing(real):  # type: ignore[no-untyped-def]
        def call(fd):  # type: ignore[no-untyped-def]
            if os.path.exists(_TRIGGER):
                raise OSError(errno.EIO, os.strerror(errno.EIO))
            return real(fd)
        return call

    os.fdatasync = _failing(_fdatasync)
    os.fsync = _failing(_fsync)
