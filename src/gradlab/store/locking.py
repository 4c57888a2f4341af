"""An exclusive lock on a sweep folder that also holds on a shared network filesystem.

``flock`` and ``fcntl`` locks are unreliable over NFS, so the lock is a file
made by an operation the NFS server performs atomically: a private file is
written in full, then hard-linked to the lock path, which fails if the path
exists (the method open(2) recommends for NFS, including the link-count
check; where a filesystem has no hard links, as some FUSE and SMB mounts,
an ``O_EXCL`` open). The file names the holder (host, PID, start time) and a heartbeat
that a daemon thread rewrites every ``heartbeat_every`` seconds.

A lock whose holder is gone is taken over: on the holder's own host when its
PID no longer runs (or now belongs to another process); from another host when
the heartbeat is older than ``stale_after``, the only sign of life visible
from there (hosts sharing a folder need clocks in step to well within that,
as NTP keeps them). On the holder's host a running holder is never taken
over, however old its heartbeat: it may be stopped (Ctrl-Z) and resume.

Removing a lock file, by a take-over or by the holder's release, first needs
a claim: a second file, named after the lock's unique token, created the same
exclusive way. Two processes finding the same stale lock cannot both claim
it, and the claimant checks under its claim that the lock file is still that
stale lock before it removes it, so nobody removes a lock that replaced it.
A claim left by a process killed while holding it (a matter of microseconds)
is passed over once it is older than ``stale_after``.

A holder stopped or cut off (Ctrl-Z, an NFS stall) for longer than
``stale_after`` looks dead from another host, which takes the lock over; so a
holder checks its token before each write into the sweep (:func:`check_lock`).

The lock file lives beside the sweep folder, ``<out>/.<name>.lock``, not in it: replacing a sweep
(``--overwrite``) deletes the folder, and the lock must protect that deletion too; an empty folder stays empty.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from gradlab.store.atomic import write_descriptor

# Not flufl.lock: it breaks a lock once its declared lifetime passes, so a SIGKILLed holder on this host blocks the
# next sweep that long, a live one stopped with Ctrl-Z is taken over, and it has no claim file nor O_EXCL fallback.
#: Lock files are padded to this size, so a heartbeat rewrites every byte in place.
RECORD_SIZE = 1024


class SweepLockedError(RuntimeError):
    """The sweep folder is locked by another process that is still alive."""


class SweepLockLost(RuntimeError):
    """This process's lock was taken over (it looked dead to another process)."""


@dataclass(frozen=True)
class LockHolder:
    """What a lock file says about its holder."""

    path: Path
    token: str  # unique per lock; "unreadable-<inode>-<mtime>" when the file could not be parsed
    host: str | None
    pid: int | None
    process_start: str | None  # the PID's start time in /proc, to tell a reused PID
    started: float | None  # time.time() when the lock was taken
    heartbeat: float  # time.time() of the last heartbeat (file mtime if unreadable)

    def describe(self) -> str:
        """``PID 123 on host h (since 2026-11-30 11:00:00 UTC, last heartbeat 2 s ago)``."""
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.started)) if self.started else "?"
        return (f"PID {self.pid if self.pid is not None else '?'} on host {self.host or '?'} "
                f"(since {since}, last heartbeat {time.time() - self.heartbeat:.0f} s ago)")


def lock_path_for(sweep_dir: str | os.PathLike) -> Path:
    """The lock file of a sweep folder: ``<parent>/.<name>.lock``, beside the folder."""
    sweep_dir = Path(sweep_dir).resolve()
    if sweep_dir.name in ("", ".", ".."):
        raise ValueError(f"{str(sweep_dir)!r} cannot be a sweep folder: it has no name of its own")
    return sweep_dir.parent / f".{sweep_dir.name}.lock"


def _process_start(pid: int) -> str | None:
    """The start time of ``pid`` (clock ticks since boot) from /proc; None where unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[19]  # field 22; the name in (...) may hold spaces


def _pid_alive(pid: int, process_start: str | None) -> bool:
    """Whether ``pid`` runs here and is the same process that took the lock (not a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return True  # no /proc: the PID exists, trust it
    if state[0] in ("Z", "X"):
        return False
    return process_start is None or state[19] == process_start


#: errno values of filesystems without hard links (some FUSE and SMB mounts).
_NO_HARD_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS}


def longest_lock_file_name(sweep_name: str) -> str:
    """The longest file name the lock of a sweep folder called ``sweep_name`` makes beside it, on this host.

    It is the private file through which a claim is created:
    ``.<name>.lock.claim-<token>-<level>.<host>.<pid>.<random>.new``.
    """
    try:  # digits of the largest PID this system hands out
        pid_digits = len(str(int(Path("/proc/sys/kernel/pid_max").read_text()) - 1))
    except (OSError, ValueError):
        pid_digits = 7
    claim = f".{sweep_name}.lock.claim-{'0' * 32}-999"  # a claim's level: 999 passed-over claims is plenty
    return f"{claim}.{socket.gethostname()}.{'0' * pid_digits}.{'0' * 12}.new"


def _create_exclusive(path: Path, content: bytes) -> int | None:
    """Create ``path`` holding ``content`` unless it exists, atomically, also over NFS.

    Returns:
        A descriptor open for reading and writing on the new file (the caller
        closes it), or None when ``path`` existed.
    """
    private = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:12]}.new")
    descriptor = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    created = no_links = False
    try:
        write_descriptor(descriptor, content, path)  # names the lock file, not the private one
        inode = os.fstat(descriptor).st_ino
        try:
            os.link(private, path)
            created = True
        except FileExistsError:
            pass
        except OSError as error:
            # NFS may report a failed reply to a link that the server made: a
            # link count of 2 on the private file says it did (open(2), O_EXCL).
            created = os.fstat(descriptor).st_nlink == 2
            no_links = not created and error.errno in _NO_HARD_LINKS
    finally:
        os.close(descriptor)  # before the unlink: NFS would keep an open unlinked file as .nfsXXXX
        os.unlink(private)
    if no_links:  # O_EXCL instead: atomic on local disks and NFSv3+, but readers may see it empty for a moment
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        write_descriptor(descriptor, content, path)
        return descriptor
    if not created:
        return None
    descriptor = os.open(path, os.O_RDWR)
    if os.fstat(descriptor).st_ino != inode:  # replaced within microseconds of its creation: not ours to hold
        os.close(descriptor)
        return None
    return descriptor


def _record(token: str, process_start: str | None, started: float, heartbeat: float) -> bytes:
    payload = json.dumps({"token": token, "host": socket.gethostname(), "pid": os.getpid(),
                          "process_start": process_start,
                          "started": round(started, 3), "heartbeat": round(heartbeat, 3)})
    return payload.ljust(RECORD_SIZE - 1).encode() + b"\n"


def read_holder(path: str | os.PathLike) -> LockHolder | None:
    """The holder named by the lock file ``path``; None when there is no such file.

    A file that cannot be parsed (damaged, or written by hand) is described by
    its inode and mtime, and ages by its mtime.
    """
    path = Path(path)
    for attempt in range(5):
        try:
            stat = path.stat()
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(text)
            return LockHolder(path, str(record["token"]), str(record["host"]), int(record["pid"]),
                              record.get("process_start"), float(record["started"]), float(record["heartbeat"]))
        except (ValueError, KeyError, TypeError):
            if stat.st_size != RECORD_SIZE:
                break  # not a record of ours being rewritten: damaged, or written by hand
            time.sleep(0.005 * (attempt + 1))  # read half-way through a heartbeat rewrite: look again
    return LockHolder(path, f"unreadable-{stat.st_ino}-{stat.st_mtime_ns}", None, None, None, None, stat.st_mtime)


def check_lock(path: str | os.PathLike, token: str) -> None:
    """Raise :class:`SweepLockLost` unless the lock file ``path`` is still the lock with ``token``.

    Cheap (one read of a 1 KB file), so a holder calls it before every write
    into its sweep, also from worker processes that know only the path and token.
    """
    holder = read_holder(path)
    if holder is not None and holder.token == token:
        return
    now = f"it is now held by {holder.describe()}" if holder is not None else "its lock file is gone"
    raise SweepLockLost(
        f"this process no longer holds the sweep lock {path}: {now}. It was stopped or cut off for longer than the "
        "lock's stale limit, so another process took the sweep over; stopping without writing more. Let that "
        "process finish, then --resume if runs are left"
    )


def _is_stale(holder: LockHolder, stale_after: float) -> bool:
    if holder.host == socket.gethostname() and holder.pid is not None:
        return not _pid_alive(holder.pid, holder.process_start)
    return time.time() - holder.heartbeat > stale_after


class SweepLock:
    """An exclusive lock on a sweep folder for as long as a ``with`` block runs.

    Example::

        with SweepLock(out / name):
            ...  # create, delete or fill the sweep folder

    Args:
        sweep_dir: the sweep folder; it need not exist (its parent is created).
        stale_after: seconds without a heartbeat after which a lock held from
            another host counts as abandoned.
        heartbeat_every: seconds between heartbeats; at most a third of ``stale_after``.

    Raises (on entry):
        SweepLockedError: another live process holds the lock; the message
            names its PID and host and what to do.
    """

    def __init__(self, sweep_dir: str | os.PathLike, *, stale_after: float = 60.0, heartbeat_every: float = 5.0) -> None:
        if not stale_after > 0 or not heartbeat_every > 0:
            raise ValueError(f"stale_after and heartbeat_every must be > 0, got {stale_after} and {heartbeat_every}")
        if heartbeat_every * 3 > stale_after:
            raise ValueError(f"heartbeat_every ({heartbeat_every} s) must be at most a third of stale_after "
                             f"({stale_after} s), or a slow heartbeat makes a live lock look abandoned")
        self.sweep_dir = Path(sweep_dir)
        self.path = lock_path_for(sweep_dir)
        self.stale_after = stale_after
        self.heartbeat_every = heartbeat_every
        self._token: str | None = None
        self._descriptor: int | None = None
        self._started = 0.0
        self._process_start: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._write_lock = threading.Lock()

    @property
    def token(self) -> str | None:
        """The unique token of the lock this object holds (None when it holds none); see :func:`check_lock`."""
        return self._token

    @property
    def held(self) -> bool:
        """Whether this object holds the lock (it may since have been taken over: see :meth:`verify`)."""
        return self._descriptor is not None

    def acquire(self) -> SweepLock:
        """Take the lock, taking over a stale one; see the class docstring for the error."""
        if self.held:
            raise RuntimeError(f"{self.path} is already held by this SweepLock")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        self._process_start = _process_start(os.getpid())
        deadline = time.monotonic() + 2.0
        while True:
            self._started = time.time()
            record = _record(token, self._process_start, self._started, self._started)
            descriptor = _create_exclusive(self.path, record)
            if descriptor is not None:
                break
            if time.monotonic() > deadline:  # a take-over by another process has not finished
                raise SweepLockedError(f"sweep folder {self.sweep_dir} is being taken over from a dead holder "
                                       f"by another process; try again (lock file {self.path})")
            holder = read_holder(self.path)
            if holder is not None and not _is_stale(holder, self.stale_after):
                raise SweepLockedError(
                    f"sweep folder {self.sweep_dir} is in use by {holder.describe()}. Wait for that sweep to end, "
                    f"or, if that process is surely dead, delete the lock file {self.path}"
                )
            if holder is not None and not self._remove(holder):
                time.sleep(0.02)  # another process is taking it over: wait, then see who holds the lock
        self._token, self._descriptor = token, descriptor
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._thread.start()
        return self

    def _claim(self, token: str) -> Path | None:
        """Claim the right to remove the lock file with ``token``; None if another process holds that right."""
        level = 0
        while True:
            claim = self.path.with_name(f"{self.path.name}.claim-{token}-{level}")
            try:
                descriptor = _create_exclusive(claim, f"{socket.gethostname()} {os.getpid()}\n".encode())
            except OSError as error:  # e.g. a name too long (ENAMETOOLONG), a read-only folder
                raise SweepLockedError(
                    f"cannot make the claim file {claim.name} needed to remove the lock file {self.path} "
                    f"({error.strerror or error}); once no gradlab sweep uses {self.sweep_dir}, delete {self.path} "
                    "by hand (and, for a name too long, continue the sweep under a shorter --name)"
                ) from None
            if descriptor is not None:
                os.close(descriptor)
                return claim
            try:
                age = time.time() - claim.stat().st_mtime
            except FileNotFoundError:
                continue  # its owner just finished: try that level again
            if age <= self.stale_after:
                return None
            level += 1  # left by a process killed while claiming: pass it over

    def _remove(self, seen: LockHolder, *, check_stale: bool = True) -> bool:
        """Remove the lock file if it still is ``seen`` (and still stale); True when removed."""
        claim = self._claim(seen.token)
        if claim is None:
            return False
        try:
            current = read_holder(self.path)
            if current is None or current.token != seen.token:
                return False
            if check_stale and not _is_stale(current, self.stale_after):
                return False
            self.path.unlink()
            return True
        finally:
            claim.unlink(missing_ok=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_every):
            try:
                self._write_heartbeat()
            except OSError as error:  # a network filesystem hiccup: the next beat may succeed
                warnings.warn(f"could not refresh the heartbeat of {self.path}: {error}", RuntimeWarning, stacklevel=1)

    def _write_heartbeat(self) -> None:
        # Written through our own descriptor: if the lock was taken over, this
        # touches our old file, never the new holder's.
        with self._write_lock:
            if self._descriptor is None:
                return
            os.pwrite(self._descriptor, _record(self._token, self._process_start, self._started, time.time()), 0)
            os.fsync(self._descriptor)

    def verify(self) -> None:
        """Raise :class:`SweepLockLost` unless the lock file is still this lock.

        Call before writes that must not race a process that took the lock over.
        """
        if not self.held:
            raise SweepLockLost(f"the lock {self.path} is not held by this process")
        check_lock(self.path, self._token)

    def release(self) -> None:
        """Stop the heartbeat and remove the lock file, only if it is still this lock."""
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._write_lock:
            descriptor, self._descriptor = self._descriptor, None
        os.close(descriptor)
        # A process that found this lock stale a moment ago may hold the claim
        # on it; it gives the claim up within milliseconds once it sees this PID alive.
        deadline = time.monotonic() + 2.0
        try:
            while (mine := read_holder(self.path)) is not None and mine.token == self._token:
                if self._remove(mine, check_stale=False) or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
        except SweepLockedError as error:  # the work is done; the next sweep here says the same
            warnings.warn(str(error), RuntimeWarning, stacklevel=2)
        self._token = None

    def __enter__(self) -> SweepLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.release()
