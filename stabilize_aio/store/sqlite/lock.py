"""The one-engine lock on an SQLite file: ``flock(2)`` on the file itself, and this process's registry of held files.

Every name of the file (a symlink, a hard link in any directory) leads to the
same lock, in every process, and the kernel drops it when the holder dies. It
is separate from SQLite's own ``fcntl`` locks, which closing *any* descriptor
of the file drops; so within the process that holds a file, the registry
``_HELD`` refuses a second store before it opens the file.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from ..._errors import DatabaseLockedError, StoreError


class HeldFile:
    """A database file a store of this process holds: its identity, the descriptor holding the flock."""

    __slots__ = ("fd", "key", "path", "strays")

    def __init__(self, key: tuple[int, int], fd: int, path: Path) -> None:
        self.key = key  # (st_dev, st_ino): the file, whatever its name
        self.fd = fd
        self.path = path  # the name it was opened by
        self.strays: list[int] = []  # descriptors of it another open() made in a race: closed with fd


#: The database files stores of this process hold, by (st_dev, st_ino). A second store on any name of
#: one is refused before it opens the file: closing a descriptor of a file drops every POSIX lock this
#: process holds on it, and the open store's SQLite connections hold theirs on it all along.
_HELD: dict[tuple[int, int], HeldFile] = {}

_HELD_LOCK = threading.Lock()  # stores may open in several threads' event loops


def lock_file(path: Path) -> HeldFile:
    """Take the one-engine lock on the database file ``path`` names, creating the file if missing.

    The lock is ``flock(2)`` on the file itself, so every name of the file (a
    symlink, a hard link in any directory) leads to the same lock, in any
    process. It is separate from SQLite's own locks (``fcntl`` byte ranges):
    never use ``fcntl``/``lockf`` here, whose release would drop them. And as
    closing *any* descriptor of the file drops this process's ``fcntl`` locks
    on it, a file a store of this process holds is refused by the registry
    ``_HELD`` before a descriptor of it is opened.

    Raises:
        DatabaseLockedError: a store of this process or another process holds the file.
        StoreError: the file cannot be opened or locked.
    """
    with _HELD_LOCK:
        try:
            st = os.stat(path)
        except OSError:
            pass  # missing (created below), or unreachable (the open below says why)
        else:
            _refuse_if_held((st.st_dev, st.st_ino), path)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK, 0o644)  # (a FIFO: no hang)
        except OSError as exc:
            raise StoreError(f"cannot open {str(path)!r}: {exc.strerror}") from exc
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        held = _HELD.get(key)
        if held is not None:  # the name was moved onto a held file between stat and open
            held.strays.append(fd)  # closing it now would drop the holder's SQLite locks
            raise _locked(path, os.getpid(), held.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)  # no store of this process holds the file: none of our connections has locks on it
            if isinstance(exc, BlockingIOError):
                raise _locked(path, _flock_holder(key), None) from None
            raise StoreError(f"cannot lock {str(path)!r}: {exc.strerror}") from exc
        held = HeldFile(key, fd, path)
        _HELD[key] = held
        return held


def unlock_file(held: HeldFile) -> None:
    """Release the lock (call after the store's connections are closed)."""
    with _HELD_LOCK:
        if _HELD.get(held.key) is held:
            del _HELD[held.key]
    for fd in (*held.strays, held.fd):
        os.close(fd)  # the last descriptor of the flock's open file drops the flock


def _refuse_if_held(key: tuple[int, int], path: Path) -> None:
    held = _HELD.get(key)
    if held is not None:
        raise _locked(path, os.getpid(), held.path)


def _locked(path: Path, pid: int | None, held_as: Path | None) -> DatabaseLockedError:
    holder = f"pid {pid}" if pid is not None else "pid unknown"
    if held_as is not None and held_as != path:
        holder += f", opened as {str(held_as)!r}"
    return DatabaseLockedError(
        f"another engine is running on {str(path)!r} ({holder}); one SQLite file takes one running engine"
    )


def _flock_holder(key: tuple[int, int]) -> int | None:
    """The pid holding a flock on the file ``key`` identifies, read from /proc/locks (Linux); None if unknown."""
    dev, ino = key
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in lines:
        # "12: FLOCK  ADVISORY  WRITE 4242 fe:00:1474578 0 EOF"; a blocked waiter's line has "->" after "12:"
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
            return int(fields[4]) or None
    return None
