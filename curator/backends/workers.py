"""Worker processes for the local backend, started as ``python -m curator.backends.workers``.

Not :mod:`multiprocessing`: its spawn start method re-runs the caller's main script in every worker,
which breaks any script that calls ``curator.score`` without an ``if __name__ == "__main__":`` guard,
and fork is unsafe once torch runs threads. A worker here is a fresh interpreter that reads jobs
(a module-level function and its arguments, pickled) from its stdin and writes length-prefixed
pickled frames to a pipe of its own: progress reports, then the result or the error. Whatever the
job prints goes to the driver's stderr, never into the frames.
"""

from __future__ import annotations

import os
import pickle
import queue
import struct
import subprocess
import sys
import threading
import traceback
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable

import numpy as np

_HEADER = struct.Struct("<Q")


class WorkerError(RuntimeError):
    """A job raised in a worker process; the message carries the worker's traceback."""


def _write(stream: BinaryIO, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read(stream: BinaryIO) -> object | None:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(header)
    data = stream.read(size)
    return pickle.loads(data) if len(data) == size else None


@dataclass(frozen=True)
class InputsFile:
    """Inputs a worker reopens from their .npy file instead of receiving a pickled copy."""

    path: str

    def open(self) -> np.ndarray:
        return np.load(self.path, mmap_mode="r")


def shareable(array: np.ndarray | None) -> "InputsFile | np.ndarray | None":
    """What a worker gets for ``array``: a memory-mapped .npy travels as its path, anything else as itself."""
    filename = getattr(array, "filename", None)
    if filename and str(filename).endswith(".npy") and np.load(filename, mmap_mode="r").shape == array.shape:
        return InputsFile(str(filename))
    return array if array is None else np.asarray(array)


def opened(shared: "InputsFile | np.ndarray | None") -> np.ndarray | None:
    """The array :func:`shareable` sent."""
    return shared.open() if isinstance(shared, InputsFile) else shared


def picklable(obj: object) -> bool:
    """Whether ``obj`` can travel to a worker (a lambda or a local function cannot)."""
    try:
        pickle.dumps(obj)
    except Exception:
        return False
    return True


class _Worker:
    """One worker process and the driver thread that feeds it jobs from the pool's queue."""

    def __init__(self, jobs: "queue.Queue", env: dict[str, str]):
        read_fd, write_fd = os.pipe()
        self.process = subprocess.Popen([sys.executable, "-m", "curator.backends.workers", str(write_fd)],
                                        stdin=subprocess.PIPE, stdout=sys.stderr.fileno() if _has_fileno() else None,
                                        pass_fds=(write_fd,), env=env)
        os.close(write_fd)
        self.frames = os.fdopen(read_fd, "rb")
        self.jobs = jobs
        self.thread = threading.Thread(target=self._serve, daemon=True, name="curator-worker")
        self.thread.start()

    def _serve(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                break
            fn, args, future, on_progress = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                _write(self.process.stdin, (fn, args))
                while True:
                    frame = _read(self.frames)
                    if frame is None:
                        raise WorkerError(f"worker process {self.process.pid} exited "
                                          f"(code {self.process.poll()}) during {fn.__name__}")
                    kind, payload = frame
                    if kind == "progress":
                        if on_progress is not None:
                            on_progress(payload)
                        continue
                    if kind == "done":
                        future.set_result(payload)
                    else:
                        future.set_exception(WorkerError(payload))
                    break
            except BaseException as exc:  # a dead worker fails its job, and this worker stops serving
                if not future.done():
                    future.set_exception(exc)
                break

    def close(self, kill: bool = False) -> None:
        try:
            if kill:
                self.process.kill()
            else:
                self.process.stdin.close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
        self.frames.close()


def _has_fileno() -> bool:
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):   # a captured stderr (pytest, notebooks)
        return False
    return True


class WorkerPool:
    """``n`` worker processes, started on the first job; :meth:`submit` returns a Future."""

    def __init__(self, n: int):
        self.n = n
        self._jobs: queue.Queue = queue.Queue()
        self._workers: list[_Worker] = []

    def submit(self, fn: Callable, *args: Any, on_progress: Callable[[Any], None] | None = None) -> Future:
        """Run ``fn(*args, report)`` in a worker, where ``report(payload)`` hands ``payload`` to
        ``on_progress`` in this process. ``fn`` must be a module-level function; args must pickle."""
        if not self._workers:
            # The worker imports what this process can: the same sys.path.
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
            self._workers = [_Worker(self._jobs, env) for _ in range(self.n)]
        future: Future = Future()
        self._jobs.put((fn, args, future, on_progress))
        return future

    def shutdown(self, kill: bool = False) -> None:
        """Stop every worker: after their current job, or at once with ``kill``."""
        for _ in self._workers:
            self._jobs.put(None)
        for worker in self._workers:
            worker.close(kill)
        self._workers = []


def _serve_jobs(frames: BinaryIO) -> None:
    commands = sys.stdin.buffer
    while True:
        job = _read(commands)
        if job is None:
            return
        fn, args = job
        try:
            result = fn(*args, lambda payload: _write(frames, ("progress", payload)))
        except BaseException:
            _write(frames, ("error", f"{fn.__name__} failed in worker {os.getpid()}:\n{traceback.format_exc()}"))
        else:
            _write(frames, ("done", result))


if __name__ == "__main__":
    with os.fdopen(int(sys.argv[1]), "wb") as out:
        _serve_jobs(out)
