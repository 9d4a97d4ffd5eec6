"""Run core functions off the GUI thread.

A ``Task`` wraps ``fn(*args, progress=..., should_stop=..., **kwargs)`` and runs it on a pool
thread. Its signals are emitted from the pool thread and delivered queued to the GUI thread, so
slots never block painting. Progress is throttled (core may report thousands of steps) and a
cancel is a flag that core polls through ``should_stop`` and answers with ``Cancelled``.

Two lanes. The window's one main task (load, analysis, pruning, export: ``lane="compute"``) and
a training run go to a single long-lived thread with the torch threads the GUI claimed at start-up
(:func:`claim_compute_threads`); the small tasks beside them (estimate, importance, evaluation,
layout) run on the global pool with one torch thread each.
OpenMP (libgomp) gives every thread that runs a parallel op a team of its own, kept while that
thread lives; once the live teams hold more threads than the machine has cores, every parallel
region waits on futexes instead of spinning: on 2 cores a 300k-element ReLU went from 20 to
120 us and the window timed ConvNeXt-T at 105 ms against the command line's 53 ms (and its
speed-up at 1.40x against 1.72x). One team, on one thread, keeps the GUI's figures the CLI's.
"""
from __future__ import annotations

import logging
import threading
import time
import traceback

import torch
from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal

from core.errors import Cancelled, PruneStudioError

log = logging.getLogger("prunestudio.gui")

PROGRESS_INTERVAL_S = 0.2  # at most ~5 progress updates per second reach the GUI


class Task(QObject):
    progress = Signal(str, int, int, str)  # stage, done, total, message
    finished = Signal(object)  # the function's return value
    failed = Signal(str, str)  # one-line message, traceback
    cancelled = Signal()
    done = Signal()  # always emitted last, whatever the outcome

    def __init__(self, name: str, fn, *args, with_callbacks: bool = True, **kwargs):
        super().__init__()
        self.name = name
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._with_callbacks = with_callbacks
        self._stop = threading.Event()
        self._last_emit = 0.0
        self._last_stage = None
        self.running = False
        self.error_type = None
        self.internal = False

    def _release(self):
        _live.discard(self)

    def _emit(self, signal, *args):
        """Tell the GUI thread, unless its side is gone: a worker still running when the window
        closes and the process ends outlives this task's Qt object, and nobody is left to tell."""
        try:
            signal.emit(*args)
        except RuntimeError:  # "Signal source has been deleted"
            log.info("%s ended after its window closed", self.name)

    # called from the GUI thread
    def cancel(self):
        self._stop.set()

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def _progress(self, stage, done, total, message=""):
        now = time.monotonic()
        # always let stage changes and completion through; drop the rest inside the interval
        if stage == self._last_stage and done < total and now - self._last_emit < PROGRESS_INTERVAL_S:
            return
        self._last_stage, self._last_emit = stage, now
        self._emit(self.progress, str(stage), int(done), int(total), str(message))

    def run(self):  # on a pool thread
        self.running = True
        try:
            if self._stop.is_set():
                raise Cancelled("cancelled before it started")
            kw = dict(self._kwargs)
            if self._with_callbacks:
                kw.update(progress=self._progress, should_stop=self.should_stop)
            result = self._fn(*self._args, **kw)
            if self._stop.is_set():  # cancelled during the last, uninterruptible step
                raise Cancelled("cancelled by the user")
        except Cancelled:
            log.info("%s cancelled", self.name)
            self._emit(self.cancelled)
        except Exception as e:  # noqa: BLE001 - every failure must reach the user, not kill the thread
            tb = traceback.format_exc()
            log.error("%s failed: %s\n%s", self.name, e, tb)
            # engine errors are one clear line already; anything else needs its type to make sense
            msg = str(e) if isinstance(e, PruneStudioError) and str(e) else f"{type(e).__name__}: {e}"
            self.error_type = type(e).__name__
            self.error_detail = getattr(e, "detail", None)  # plain data (ApproximateRefused)
            self.internal = not isinstance(e, PruneStudioError)  # a bug, not bad input
            self._emit(self.failed, msg, tb)
        else:
            self._emit(self.finished, result)
        finally:
            self.running = False
            # the arguments (a session, a model) must not outlive the work: a task object lives
            # until its last signal is delivered, and a replaced model would live with it
            self._fn = self._args = self._kwargs = None
            self._emit(self.done)


class _Runnable(QRunnable):
    def __init__(self, fn, threads: int):
        super().__init__()
        self.fn, self.threads = fn, threads
        self.setAutoDelete(True)

    def run(self):
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)  # OpenMP keeps the count per thread
        self.fn()


_live: set[Task] = set()  # keep tasks alive until their last signal was delivered


def busy() -> bool:
    """Some task is running or has signals still to deliver (it may hold a replaced model)."""
    return bool(_live)


_compute: QThreadPool | None = None
_compute_threads: int | None = None


def claim_compute_threads(n: int | None = None) -> None:
    """At start-up, on the GUI thread: the compute thread gets ``n`` torch threads (default:
    torch's count now - OMP_NUM_THREADS or the cores) and the GUI thread keeps one, so nothing
    run on it by accident starts an OpenMP team of its own."""
    global _compute_threads
    _compute_threads = int(n or torch.get_num_threads())
    torch.set_num_threads(1)


def compute_threads() -> int:
    """torch threads of the compute thread: the claimed count, else the calling thread's."""
    return _compute_threads or torch.get_num_threads()


def compute_pool() -> QThreadPool:
    """The main task's lane: one thread, never retired (a new thread would start a new OpenMP
    team beside the old one's)."""
    global _compute
    if _compute is None:
        _compute = QThreadPool()
        _compute.setMaxThreadCount(1)
        _compute.setExpiryTimeout(-1)
    return _compute


def compute_busy() -> bool:
    """Something runs on the compute thread (a task, or a training run)."""
    return _compute is not None and _compute.activeThreadCount() > 0


def start(task: Task, lane: str = "side") -> Task:
    """Run ``task`` on its lane (see the module's note): ``"compute"`` with
    :func:`compute_threads` torch threads, ``"side"`` with one."""
    _live.add(task)
    # the Task lives in the GUI thread, so this slot runs there, queued after the other signals
    task.done.connect(task._release)
    if lane == "compute":
        run_on_compute_lane(task.run)
    else:
        QThreadPool.globalInstance().start(_Runnable(task.run, 1))
    return task


def run_on_compute_lane(fn) -> None:
    """``fn()`` on the main task's thread (queued behind a running task), with
    :func:`compute_threads` torch threads. For work that is not a :class:`Task` (training)."""
    compute_pool().start(_Runnable(fn, compute_threads()))
