"""Where a sweep's points run: in this process, on a local process pool, or on Ray.

Every executor runs the same function, :func:`pimserve.experiments.sweep.runner.run_chunk`,
on chunks of points, so a point's result does not depend on where it ran (runs are seeded;
the pool and Ray give the same numbers bit for bit). Chunks keep the per-task overhead small.

- :class:`SerialExecutor`: in this process (``--workers 1``).
- :class:`PoolExecutor`: ``concurrent.futures`` processes (``fork`` on Linux, so workers start
  with what the parent loaded); each worker writes every point it finishes to the store
  itself, in its own transaction, so a kill loses no finished point.
- :class:`RayExecutor`: Ray tasks (``--ray auto`` starts a local cluster, ``--ray ADDRESS``
  joins one); Ray is an optional extra, imported only here. Tasks return their rows and the
  driver writes them (a remote worker may not see the store's folder), so a kill of the
  driver loses at most the chunks in flight.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pimserve.errors import ConfigurationError
from pimserve.experiments.sweep.resolve import Point


def _die_with_parent() -> None:
    """Pool worker start-up: on Linux, ask to be killed when the parent dies, so a killed
    sweep leaves no orphan running points (best effort; elsewhere a no-op)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Executor:
    """Runs chunks of points; yields each chunk's rows as it finishes."""

    name = "executor"
    workers = 1
    #: whether the workers write their rows to the store themselves
    writes_in_workers = True

    def run(self, chunks: Sequence[Sequence[Point]], sweep: str,
            store: Path) -> Iterator[list[dict[str, Any]]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the workers."""

    def describe(self) -> str:
        return f"{self.name} ({self.workers} worker{'s' if self.workers != 1 else ''})"


class SerialExecutor(Executor):
    """Every point in this process, one after another."""

    name = "serial"

    def run(self, chunks: Sequence[Sequence[Point]], sweep: str,
            store: Path) -> Iterator[list[dict[str, Any]]]:
        from pimserve.experiments.sweep.runner import run_chunk

        for c in chunks:
            yield run_chunk(list(c), sweep, str(store))


class PoolExecutor(Executor):
    """A local process pool of ``workers`` processes (default: all cores)."""

    name = "local pool"

    def __init__(self, workers: int | None = None):
        n = workers if workers is not None else (os.cpu_count() or 1)
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigurationError(f"--workers must be a positive integer (got {workers!r})")
        self.workers = n
        self._pool: Any = None

    def run(self, chunks: Sequence[Sequence[Point]], sweep: str,
            store: Path) -> Iterator[list[dict[str, Any]]]:
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
        from multiprocessing import get_all_start_methods, get_context

        from pimserve.experiments.sweep.runner import run_chunk

        if not chunks:
            return
        method = "fork" if "fork" in get_all_start_methods() else None
        self._pool = ProcessPoolExecutor(max_workers=min(self.workers, len(chunks)),
                                         mp_context=get_context(method),
                                         initializer=_die_with_parent)
        # submit everything first: with fork, the workers start at the first submit, before
        # any progress-bar thread exists
        pending = {self._pool.submit(run_chunk, list(c), sweep, str(store)) for c in chunks}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        finally:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


def _reachable(address: str, timeout_s: float = 5.0) -> None:
    """Refuse at once a Ray address (``host:port`` or ``ray://host:port``) where nothing
    listens: Ray itself retries such an address for minutes."""
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ConfigurationError(f"--ray {address!r}: expected auto, host:port (the head "
                                 "node's GCS, e.g. 10.0.0.5:6379) or ray://host:10001")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as err:
        raise ConfigurationError(f"--ray {address}: nothing answers at {host}:{port} "
                                 f"({err.strerror or err}); start the cluster's head "
                                 "(ray start --head) or use --ray auto") from None


class RayExecutor(Executor):
    """Ray tasks: ``address`` ``auto`` starts a local cluster of ``workers`` CPUs (default
    all cores); another address (``ray://host:10001``, ``host:6379``) joins that cluster."""

    name = "ray"
    writes_in_workers = False

    def __init__(self, address: str = "auto", workers: int | None = None):
        try:
            import ray
        except ImportError:
            raise ConfigurationError("--ray needs Ray, an optional extra: pip install "
                                     "'pimserve[ray]' (or run on the local pool: drop --ray)"
                                     ) from None
        if workers is not None and (isinstance(workers, bool) or workers < 1):
            raise ConfigurationError(f"--workers must be a positive integer (got {workers!r})")
        if address != "auto" and workers is not None:
            raise ConfigurationError("--workers sizes the local pool or a local Ray cluster "
                                     "(--ray auto); a cluster at an address uses its own CPUs")
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                  "configure_logging": False}
            if address == "auto":
                kw["num_cpus"] = workers or os.cpu_count() or 1
                ray.init(**kw)
            else:
                _reachable(address)
                try:
                    ray.init(address=address, **kw)
                except (ConnectionError, RuntimeError, ValueError) as err:
                    raise ConfigurationError(
                        f"--ray {address}: no Ray cluster could be joined there ("
                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}); "
                        "give the head node's host:port (ray start --head prints it) or "
                        "ray://host:10001, or --ray auto for a local cluster; a cluster "
                        "started with RAY_AUTH_MODE=token needs the same RAY_AUTH_MODE and "
                        "token here (ray get-auth-token)") from None
            self._started = True
        self.workers = int(ray.cluster_resources().get("CPU", 1))
        self._remote: Any = None

    def run(self, chunks: Sequence[Sequence[Point]], sweep: str,
            store: Path) -> Iterator[list[dict[str, Any]]]:
        from pimserve.experiments.sweep.runner import run_chunk

        ray = self._ray
        if self._remote is None:
            self._remote = ray.remote(num_cpus=1, max_retries=2)(run_chunk)
        pending = [self._remote.remote(list(c), sweep, None) for c in chunks]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    yield ray.get(ref)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)

    def close(self) -> None:
        if self._started:
            self._ray.shutdown()
            self._started = False


def make_executor(workers: int | None = None, ray: str | None = None) -> Executor:
    """The executor for ``--workers`` / ``--ray``: Ray when ``ray`` is given, in-process for
    one worker, else a local pool (all cores when ``workers`` is None)."""
    if ray is not None:
        return RayExecutor(ray, workers)
    if workers == 1:
        return SerialExecutor()
    return PoolExecutor(workers)
