"""The temporary files behind every write (:mod:`core.io.atomic`): recognisable names, modes that
follow the umask, a registry of the live ones, their removal on SIGTERM/SIGINT and at exit, the
sweep of stale ones a killed process left, and disk errors that name the file and the cause.

A temporary file is ``.prunestudio-tmp-<pid>-<random>-<name>`` next to its destination. A process
killed with SIGKILL cannot remove its own; the next write into that folder removes those older than
:data:`STALE_SECONDS` whose process is gone - but never a previous output kept aside during a
commit (``....prunestudio-old``): after a crash in the middle of a commit it may be the only copy.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import os
import secrets
import shutil
import signal
import threading
import time

from core.errors import PruneStudioError

PREFIX = ".prunestudio-tmp-"
BACKUP = ".prunestudio-old"  # the suffix of a previous output kept aside while outputs are committed
STALE_SECONDS = 3600
DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
               errno.EIO}

_live: set[str] = set()
_lock = threading.Lock()
_commits = [0, 0]  # output sets committed: in all, and when the running command started


class Terminated(BaseException):
    """SIGTERM (or SIGHUP) arrived: unwinds like KeyboardInterrupt, so that every write in progress
    removes its temporary file."""

    def __init__(self, signum: int):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


# ----------------------------------------------------------------------------- names and the registry

def temp_path(folder: str, base: str, suffix: str = "") -> str:
    """A fresh temporary name in ``folder`` for the destination named ``base``."""
    base = base[:80]
    if suffix and not base.endswith(suffix):
        base += suffix
    return os.path.join(folder, f"{PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{base}")


def create_file(folder: str, base: str, suffix: str = "") -> str:
    """Create an empty temporary file (mode 0666 less the umask) and register it."""
    for _ in range(100):
        p = temp_path(folder, base, suffix)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        register(p)
        os.close(fd)
        return p
    raise FileExistsError(errno.EEXIST, "no free temporary name", folder)


def create_dir(folder: str, base: str) -> str:
    """Create an empty temporary directory (mode 0777 less the umask) and register it."""
    for _ in range(100):
        p = temp_path(folder, base)
        try:
            os.mkdir(p, 0o777)
        except FileExistsError:
            continue
        register(p)
        return p
    raise FileExistsError(errno.EEXIST, "no free temporary name", folder)


def register(path: str) -> None:
    with _lock:
        _live.add(os.path.abspath(path))


def forget(path: str) -> None:
    with _lock:
        _live.discard(os.path.abspath(path))


def remove(path: str) -> None:
    """Remove a temporary file or directory (quietly) and forget it."""
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.remove(path)
    except OSError:
        pass
    forget(path)


def live() -> list[str]:
    with _lock:
        return sorted(_live)


def remove_all() -> None:
    """Remove every temporary file this process still has (an interrupted write's)."""
    for p in live():
        remove(p)


atexit.register(remove_all)


def note_commit() -> None:
    _commits[0] += 1


def committed_in_command() -> bool:
    """Whether outputs were moved into place since :func:`signal_handlers` began."""
    return _commits[0] > _commits[1]


# ----------------------------------------------------------------------------- stale files

def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists
        return True
    return True


def sweep(folder: str, max_age: float = STALE_SECONDS) -> list[str]:
    """Remove the temporary files and folders in ``folder`` left by killed processes: older than
    ``max_age`` seconds and whose process is gone. Returns what was removed."""
    gone = []
    try:
        names = [n for n in os.listdir(folder) if n.startswith(PREFIX) and not n.endswith(BACKUP)]
    except OSError:
        return gone
    now = time.time()
    for n in names:
        p = os.path.join(folder, n)
        try:
            pid = int(n[len(PREFIX):].split("-", 1)[0])
            age = now - os.lstat(p).st_mtime
        except (ValueError, OSError):
            continue
        if age < max_age or _pid_alive(pid):
            continue
        remove(p)
        if not os.path.lexists(p):
            gone.append(p)
    return gone


# ----------------------------------------------------------------------------- signals

_deferred = threading.local()
_pending: list[int] = []


def _on_signal(signum, frame):
    if getattr(_deferred, "on", False):
        _pending.append(signum)
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


@contextlib.contextmanager
def signal_handlers():
    """SIGTERM/SIGHUP raise :class:`Terminated` and SIGINT KeyboardInterrupt while the block runs
    (main thread only; elsewhere a no-op), so writes in progress clean up; the previous handlers
    come back afterwards. A signal the process was told to ignore (``nohup``, ``&``) stays
    ignored."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    sigs = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None),
                        signal.SIGINT) if s is not None]
    old = {}
    _commits[1] = _commits[0]
    try:
        for s in sigs:
            if signal.getsignal(s) is not signal.SIG_IGN:
                old[s] = signal.signal(s, _on_signal)
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGTERM/SIGINT (handled by :func:`signal_handlers`) until the block ends: a commit
    is not cut in the middle."""
    if getattr(_deferred, "on", False):
        yield
        return
    _deferred.on = True
    try:
        yield
    finally:
        _deferred.on = False
        if _pending:
            s = _pending[0]
            _pending.clear()
            _on_signal(s, None)


def exit_status(e: BaseException) -> int:
    """The exit status of a run ended by a signal: 128 + its number (SIGINT: 130)."""
    return 128 + (e.signum if isinstance(e, Terminated) else signal.SIGINT)


# ----------------------------------------------------------------------------- errors

def _oserror_in(e: BaseException | None) -> OSError | None:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in DISK_ERRNOS:
            return e
        e = e.__cause__ or e.__context__
    return None


def _low_space(folder: str) -> bool:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return False
    return st.f_bavail * st.f_frsize < 1 << 20


def disk_error(e: BaseException, path: str) -> PruneStudioError | None:
    """A one-line error naming ``path`` and the cause when ``e`` is a failed write (full disk,
    quota, permissions, read-only file system); None for other errors. Writers such as torch's
    wrap the OSError in their own error: a full disk is then recognised from the free space."""
    folder = os.path.dirname(os.path.abspath(path))
    oe = _oserror_in(e)
    if oe is not None:
        return PruneStudioError(f"cannot write {path}: {oe.strerror or os.strerror(oe.errno)}")
    text = str(e)
    for code in (errno.ENOSPC, errno.EDQUOT):
        if os.strerror(code) in text:
            return PruneStudioError(f"cannot write {path}: {os.strerror(code)}")
    if isinstance(e, (RuntimeError, OSError)) and _low_space(folder):
        return PruneStudioError(f"cannot write {path}: {os.strerror(errno.ENOSPC)}")
    return None


class RecordingFile:
    """A binary file that remembers the OSError its ``write`` raised (torch.save turns it into an
    unrelated RuntimeError)."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, b):
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise

    def flush(self):
        self.f.flush()


def torch_save(obj, tmp: str) -> None:
    """``torch.save`` into ``tmp`` through a file object: the archive's inner name is always
    ``archive`` (a path would put the random temporary name into the file), and a failed write
    raises its OSError."""
    import torch
    with open(tmp, "wb") as raw:
        rec = RecordingFile(raw)
        try:
            torch.save(obj, rec)
            raw.flush()
        except Exception:
            if rec.error is not None:
                raise rec.error from None
            raise


def fsync_file(path: str) -> None:
    """Flush a written file to the disk (a full disk may only show here); folders are flushed
    where the system allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EBADF, errno.EISDIR, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)
