"""Atomic writes: every output is written to a temporary sibling (see :mod:`core.io.tempfiles`),
checked, then ``os.replace``\\ d into place, so that a failure, a cancel or a signal leaves the
destination as it was. An existing output is replaced only with ``force=True``; the input model
(``source``) and anything that is not a regular file (FIFO, symlink, device, socket) never are.

Several outputs of one command are one :class:`OutputSet`: each write inside ``with OutputSet()``
is only staged (written and checked), and :meth:`OutputSet.commit` moves them all into place at the
end - or, if any step fails, leaves every existing file exactly as it was::

    with OutputSet() as outs:
        save_whole(model, "m.pt", force=True)      # staged
        write_json("r.json", report, force=True)   # staged
        outs.commit()                              # both replaced, or neither
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import stat

from core.errors import Cancelled, PruneStudioError
from core.io import tempfiles


class OutputExistsError(PruneStudioError, FileExistsError):
    """The destination exists and ``force`` was not given."""


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def special_kind(path: str) -> str | None:
    """What ``path`` is when it exists and is not a regular file (``"a FIFO (named pipe)"``)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    return next((what for test, what in _KINDS if test(mode)), None)


def refuse_special(path: str) -> None:
    what = special_kind(path)
    if what is not None:
        raise PruneStudioError(f"output {path} is {what}, not a regular file: refusing to replace "
                               f"it (even with --force); choose another output name")


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_destination(path: str, force: bool = False, source: str | list | None = None) -> None:
    """Raise unless ``path`` may be written: its folder exists, it is not the input file, it is not
    a FIFO, symlink, device or folder, and it does not exist yet (or ``force``). Called before the
    work starts and again when the outputs are moved into place."""
    if not path:
        raise PruneStudioError("no output file name given")
    sources = [source] if isinstance(source, str) else list(source or [])
    for s in sources:
        if s and _same_file(path, s):
            raise PruneStudioError(f"refusing to write over the input file {s}; choose another "
                                   f"output name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise PruneStudioError(f"output folder {folder} does not exist")
    if os.path.isdir(path) and not os.path.islink(path):
        raise PruneStudioError(f"output {path} is a folder")
    refuse_special(path)
    if os.path.lexists(path) and not force:
        raise OutputExistsError(f"{path} already exists; pass --force (force=True) to overwrite it")


def stop_check(should_stop) -> None:
    """Raise Cancelled when the caller's ``should_stop()`` says so (None: never)."""
    if should_stop is not None and should_stop():
        raise Cancelled("export cancelled; nothing was written")


def remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


# ----------------------------------------------------------------------------- output sets

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("prunestudio_output_set", default=None)


class _Staged:
    def __init__(self, path, tmp, recheck, is_dir):
        self.path, self.tmp, self.recheck, self.is_dir = path, tmp, recheck, is_dir
        self.backup = None  # the previous file or folder, kept until every output is in place
        self.placed = False


class OutputSet:
    """Outputs committed together: inside ``with OutputSet() as outs`` every :func:`atomic_write`
    and :func:`atomic_write_dir` (in this thread) only stages its file; ``outs.commit()`` moves them
    all into place. Leaving the block without a commit removes the staged files."""

    def __init__(self):
        self.staged: list[_Staged] = []
        self.committed = False
        self._token = None

    def __enter__(self):
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc):
        _ACTIVE.reset(self._token)
        if not self.committed:
            self.discard()
        return False

    def add(self, path: str, tmp: str, recheck, is_dir: bool = False) -> None:
        self.staged.append(_Staged(path, tmp, recheck, is_dir))

    def discard(self) -> None:
        for s in self.staged:
            tempfiles.remove(s.tmp)
        self.staged = []

    def commit(self) -> None:
        """Re-check every destination, then move every staged output into place; on any failure
        the outputs already moved are undone and the previous files restored."""
        with tempfiles.signals_deferred():
            try:
                for s in self.staged:
                    s.recheck()
                for s in self.staged:
                    _place(s)
            except BaseException:
                for s in reversed(self.staged):
                    _undo(s)
                self.discard()
                raise
            for s in self.staged:
                if s.backup is not None:
                    tempfiles.remove(s.backup)
                tempfiles.forget(s.tmp)
            for folder in {os.path.dirname(os.path.abspath(s.path)) for s in self.staged}:
                tempfiles.fsync_file(folder)
            self.committed = True
            tempfiles.note_commit()


@contextlib.contextmanager
def scratch_writes():
    """Writes in this block commit alone, not with the active :class:`OutputSet`: a scratch file
    the command makes and removes itself (an original model exported only to be timed)."""
    token = _ACTIVE.set(None)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _place(s: _Staged) -> None:
    folder = os.path.dirname(os.path.abspath(s.path))
    try:
        if os.path.lexists(s.path) and (not s.is_dir or os.listdir(s.path)):
            s.backup = tempfiles.temp_path(folder, os.path.basename(s.path), tempfiles.BACKUP)
            tempfiles.register(s.backup)
            try:
                if s.is_dir:
                    raise OSError
                os.link(s.path, s.backup)  # the destination never disappears, even for a moment
            except OSError:
                os.replace(s.path, s.backup)
        os.replace(s.tmp, s.path)
        s.placed = True
    except OSError as e:
        raise PruneStudioError(f"cannot write {s.path}: {e.strerror or e}") from None


def _undo(s: _Staged) -> None:
    """Put the previous file or folder back (a backup that cannot be restored stays on disk, where
    the sweep leaves it alone)."""
    try:
        if s.backup is not None:
            if s.is_dir and s.placed:
                shutil.rmtree(s.path)
            os.replace(s.backup, s.path)  # the previous file or folder back in place
            if os.path.lexists(s.backup):  # a hard link of the same file: rename did nothing
                os.remove(s.backup)
        elif s.placed:
            tempfiles.remove(s.path)
    except OSError:
        pass
    if s.backup is not None:
        tempfiles.forget(s.backup)
        s.backup = None


def _stage(path: str, tmp: str, write, check, should_stop, recheck, is_dir: bool) -> None:
    """Write and check ``tmp``, then hand it to the active OutputSet or commit it alone."""
    try:
        try:
            write(tmp)
            if not is_dir:
                tempfiles.fsync_file(tmp)
        except (Cancelled, KeyboardInterrupt, tempfiles.Terminated):
            raise
        except BaseException as e:
            err = tempfiles.disk_error(e, path)
            if err is not None:
                raise err from None
            raise
        stop_check(should_stop)
        if check is not None:
            check(tmp)
        stop_check(should_stop)
        recheck()
    except BaseException:
        tempfiles.remove(tmp)
        if not is_dir:
            tempfiles.remove(tmp + ".data")  # external data an exporter may have written next to it
        raise
    outs = _ACTIVE.get()
    if outs is not None:
        outs.add(path, tmp, recheck, is_dir)
        return
    with OutputSet() as one:
        one.add(path, tmp, recheck, is_dir)
        one.commit()


def _cannot_write(path: str, e: OSError) -> PruneStudioError:
    return PruneStudioError(f"cannot write {path}: {e.strerror or e}")


def atomic_write(path: str, write, check=None, force: bool = False, source=None,
                 suffix: str | None = None, should_stop=None) -> None:
    """``write(tmp_path)`` then ``check(tmp_path)``, then move into place (or stage it in the active
    :class:`OutputSet`); no file on failure. ``should_stop()`` is polled before and between the
    steps: a cancel leaves no file. ``suffix`` is the temporary file's (writers such as ONNX's
    choose the format by suffix). The file's mode follows the umask."""
    stop_check(should_stop)
    check_destination(path, force, source)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    tempfiles.sweep(folder)
    try:
        tmp = tempfiles.create_file(folder, base, suffix if suffix is not None else
                                    os.path.splitext(base)[1])
    except OSError as e:
        raise _cannot_write(path, e) from None
    _stage(path, tmp, write, check, should_stop, lambda: check_destination(path, force, source),
           is_dir=False)


def atomic_write_dir(path: str, write, check=None, check_destination=None, should_stop=None) -> None:
    """The directory form of :func:`atomic_write`: ``write(tmp_dir)`` into a temporary sibling,
    ``check(tmp_dir)``, then swap it into place. ``check_destination()`` raises when ``path`` may
    not be written; it runs first and again just before the swap (the folder may have appeared
    meanwhile). A previous directory at ``path`` is moved aside and restored if the swap fails."""
    path = path.rstrip("/" + os.sep) or path
    stop_check(should_stop)

    def recheck():
        if os.path.islink(path) or (os.path.lexists(path) and not os.path.isdir(path)):
            refuse_special(path)
        if check_destination is not None:
            check_destination()

    recheck()
    parent = os.path.dirname(os.path.abspath(path))
    tempfiles.sweep(parent)
    try:
        tmp = tempfiles.create_dir(parent, os.path.basename(path))
    except OSError as e:
        raise _cannot_write(path, e) from None
    _stage(path, tmp, write, check, should_stop, recheck, is_dir=True)
