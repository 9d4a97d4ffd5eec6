"""Atomic writes: every output is written to a temporary file (or directory) next to its
destination, checked, then ``os.replace``\\ d into place, so that a failure or a cancel leaves no
file behind. An existing output is never overwritten unless ``force=True``, and the input model
(``source``) is never written over, even with ``force``."""
from __future__ import annotations

import os
import shutil
import tempfile

from core.errors import Cancelled, PruneStudioError


class OutputExistsError(PruneStudioError, FileExistsError):
    """The destination exists and ``force`` was not given."""


def _same_file(a: str, b: str) -> bool:
    try:
        if os.path.exists(a) and os.path.exists(b):
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_destination(path: str, force: bool = False, source: str | list | None = None) -> None:
    """Raise unless ``path`` may be written: its folder exists, it is not the input file, and it
    does not exist yet (or ``force``). Called before the work starts and again when writing."""
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
    if os.path.isdir(path):
        raise PruneStudioError(f"output {path} is a folder")
    if os.path.exists(path) and not force:
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


def atomic_write(path: str, write, check=None, force: bool = False, source=None,
                 suffix: str | None = None, should_stop=None) -> None:
    """``write(tmp_path)`` then ``check(tmp_path)``, then move into place; no file on failure.
    ``should_stop()`` is polled before and between the steps: a cancel leaves no file.
    ``suffix`` is the temporary file's (writers such as ONNX's choose the format by suffix)."""
    stop_check(should_stop)
    check_destination(path, force, source)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    sfx = suffix if suffix is not None else os.path.splitext(base)[1]
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{sfx}", dir=folder)
    except OSError as e:
        raise PruneStudioError(f"cannot write in {folder}: {e.strerror or e}") from None
    os.close(fd)
    try:
        write(tmp)
        stop_check(should_stop)
        if check is not None:
            check(tmp)
        stop_check(should_stop)
        if os.path.exists(path) and not force:  # appeared meanwhile
            raise OutputExistsError(f"{path} already exists; pass --force (force=True) to overwrite it")
        os.replace(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        remove_quietly(tmp + ".data")  # external data an exporter may have written next to it
        raise


def atomic_write_dir(path: str, write, check=None, check_destination=None, should_stop=None) -> None:
    """The directory form of :func:`atomic_write`: ``write(tmp_dir)`` into a temporary sibling,
    ``check(tmp_dir)``, then swap it into place. ``check_destination()`` raises when ``path`` may
    not be written; it runs first and again just before the swap (the folder may have appeared
    meanwhile). A previous directory at ``path`` is moved aside and restored if the swap fails."""
    path = path.rstrip("/" + os.sep) or path
    stop_check(should_stop)
    if check_destination is not None:
        check_destination()
    parent = os.path.dirname(os.path.abspath(path))
    try:
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=parent)
    except OSError as e:
        raise PruneStudioError(f"cannot write in {parent}: {e.strerror or e}") from None
    old = None
    try:
        write(tmp)
        stop_check(should_stop)
        if check is not None:
            check(tmp)
        stop_check(should_stop)
        if check_destination is not None:
            check_destination()
        if os.path.isdir(path) and os.listdir(path):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(path)}.", suffix=".old", dir=parent)
            os.rmdir(old)
            os.replace(path, old)
        try:
            os.replace(tmp, path)  # an existing empty directory is replaced
        except BaseException:
            if old is not None:
                os.replace(old, path)
                old = None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
