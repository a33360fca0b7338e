"""Port ownership: the gateways of one deployment share their ports, no one else joins.

SO_REUSEPORT lets every gateway of a deployment listen on the same ports, but
the kernel lets *any* socket of the same user join them, and would then split
clients at random between two unrelated stores. So before it binds, a gateway
claims each port for its data directory:

- ``RUNTIME/port-N.lock`` holds the owning data directory; every gateway of
  that deployment keeps a shared ``flock`` on it for as long as it runs. The
  kernel drops the flock when the process dies (even on SIGKILL), so a stale
  owner can never keep a port.
- ``RUNTIME/port-N.guard`` serialises the check-and-claim: under its exclusive
  flock a gateway tries an exclusive lock on ``port-N.lock``; if that succeeds no
  one owns the port and it records its own data directory; otherwise it reads
  the owner and joins only when the owner is its own data directory.

``RUNTIME`` is ``$XDG_RUNTIME_DIR/hydra`` or ``/tmp/hydra-UID``, a 0700
directory of this user. Other users cannot join the ports anyway: the kernel
allows SO_REUSEPORT only among sockets of one user.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat

from hydra.errors import AddressInUse, InvalidArgument


def runtime_dir() -> str:
    """This user's private directory for port claims (created 0700)."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    path = os.path.join(base, "hydra") if base else f"/tmp/hydra-{os.geteuid()}"
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    # In /tmp anybody could have made it first: use it only if it is ours alone.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise InvalidArgument(f"{path} is not a directory of this user; remove it")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


class PortClaims:
    """The ports this process holds for ``data_dir``; ``release()`` gives them up."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = os.path.realpath(data_dir)
        self._fds: dict[int, int] = {}
        self._dir: str | None = None

    def claim(self, port: int, what: str) -> None:
        """Claim ``port`` or raise AddressInUse naming the data directory that owns it."""
        if port == 0 or port in self._fds:
            return
        if self._dir is None:
            self._dir = runtime_dir()
        guard = _open(os.path.join(self._dir, f"port-{port}.guard"))
        try:
            # Held only for the few system calls below.
            fcntl.flock(guard, fcntl.LOCK_EX)
            fd = _open(os.path.join(self._dir, f"port-{port}.lock"))
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    owner = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
                    if owner != self.data_dir:
                        raise AddressInUse(
                            f"{what} port {port} belongs to the Hydra deployment of data "
                            f"directory {owner or '(unknown)'}; this gateway serves "
                            f"{self.data_dir}. Stop that one or choose other ports"
                        ) from None
                else:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, (self.data_dir + "\n").encode(), 0)
                # Shared: every gateway of this deployment holds it. (Converting
                # from exclusive is not atomic, which the guard makes harmless.)
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BaseException:
                os.close(fd)
                raise
            self._fds[port] = fd
        finally:
            os.close(guard)  # drops the guard's flock

    def release(self) -> None:
        """Give the ports up; the last holder of a port also removes its lock file."""
        for port, fd in self._fds.items():
            try:
                assert self._dir is not None
                guard = _open(os.path.join(self._dir, f"port-{port}.guard"))
                try:
                    # Under the guard nobody opens the lock file, so if no one else
                    # holds it, it can go (the guard file stays: removing a file
                    # others may be waiting to lock would let two of them in).
                    fcntl.flock(guard, fcntl.LOCK_EX)
                    with contextlib.suppress(BlockingIOError):
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        os.unlink(os.path.join(self._dir, f"port-{port}.lock"))
                finally:
                    os.close(guard)
            except OSError:
                pass  # the claim ends with the close below whatever happened here
            finally:
                os.close(fd)  # drops the flock
        self._fds.clear()


def _open(path: str) -> int:
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
