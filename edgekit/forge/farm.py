"""Running tasks on any ``concurrent.futures.Executor``: a thread pool, a process pool or a
Dask cluster's (``Client.get_executor()``, docs/build-farm.md).

Three things differ between them, and are handled here:

* How many tasks run at once (:func:`executor_slots`), which sizes per-site chunks.
* Whether tasks run in this process (:func:`in_process`): only then do they get the run's
  live progress callback and the caller's ``pool``; elsewhere they are called bare and the
  runner reports progress as tasks finish.
* Completion. ``concurrent.futures.wait`` and ``as_completed`` rely on the standard
  library's own ``Future`` internals, which other executors' futures need not have (Dask's
  do not work with them: dask/distributed#3695). :class:`Completions` asks only for
  ``add_done_callback``, which every future has, and hands finished futures over a queue.

An executor whose workers are other processes must see the run's directories at the same
paths: :func:`check_shared` asks them (every worker of a Dask cluster) before any step is
sent, so a worker on another machine never builds into a disk nobody else reads.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar

from edgekit.errors import BuildError, ConfigError, MissingExtraError
from edgekit.fsutil import atomic_write_text

__all__ = ["Completions", "check_shared", "executor_slots", "in_process", "scheduler_executor"]

log = logging.getLogger("edgekit.forge")

T = TypeVar("T")
K = TypeVar("K")


def in_process(executor: Executor) -> bool:
    """Whether ``executor`` runs its tasks in threads of this process."""
    return isinstance(executor, ThreadPoolExecutor)


def _dask_client(executor: Executor) -> Any:
    """The Dask client behind ``distributed``'s ``ClientExecutor``, else None (duck-typed:
    Dask stays an optional dependency)."""
    client = getattr(executor, "_client", executor)  # or a dask.distributed.Client itself
    return client if hasattr(client, "nthreads") else None


def wait_for_cancelled(executor: Executor, run: str, timeout: float = 300) -> bool:
    """Wait (up to ``timeout`` seconds) until no Dask worker runs a task of ``run``; True
    when none does (or ``executor`` is not Dask's).

    Cancelling a Dask future does not stop its task once it runs on a worker; waiting here
    keeps a failed run from returning while a task of it still writes. Other executors'
    running tasks are waited for by :meth:`Completions.cancel`. When the workers cannot be
    asked (three failures in a row: a lost scheduler) or a task outlasts ``timeout``, it
    says so in a warning rather than hold the caller's error back any longer."""
    client = _dask_client(executor)
    if client is None or not hasattr(client, "run"):
        return True
    from .workers import running_tasks

    deadline = time.monotonic() + timeout
    errors = 0
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            counts = client.run(running_tasks, run)
        except Exception as exc:  # a worker lost meanwhile: ask the others again
            errors += 1
            if errors >= 3:
                log.warning(
                    "cannot ask the workers whether tasks of the failed run still run"
                    " (%s: %s); a task may still write to the output directory",
                    type(exc).__name__,
                    exc,
                )
                return False
            time.sleep(0.5)
            continue
        errors = 0
        if not any(counts.values()):
            return True
        time.sleep(0.2)
    log.warning(
        "%d task(s) of the failed run still run on the workers after %g s; they may"
        " still write to the output directory",
        sum(counts.values()),
        timeout,
    )
    return False


def executor_slots(executor: Executor) -> int:
    """How many tasks ``executor`` runs at once: a pool's workers, a Dask cluster's threads
    (at the start of the run: workers that join later take tasks, but did not size them)."""
    client = _dask_client(executor)
    if client is not None:
        try:
            return max(1, int(sum(client.nthreads().values())))
        except Exception:  # a cluster that cannot say: as if it had one slot
            return 1
    workers = getattr(executor, "_max_workers", None)
    return workers if isinstance(workers, int) and workers > 0 else 1


class Completions(Generic[K, T]):
    """Futures of any executor, handed back as they finish, each with its key."""

    def __init__(self) -> None:
        self._done: queue.SimpleQueue[Future[T]] = queue.SimpleQueue()
        self._keys: dict[Future[T], K] = {}

    def add(self, future: Future[T], key: K) -> None:
        self._keys[future] = key
        future.add_done_callback(self._done.put)

    def __len__(self) -> int:
        return len(self._keys)

    def next(self) -> tuple[K, Future[T]]:
        """The next finished future and its key (blocks until one finishes)."""
        while True:
            fut = self._done.get()
            key = self._keys.pop(fut, None)
            if key is not None:
                return key, fut

    def cancel(self) -> None:
        """Cancel every future still out, then wait for those already running here.

        A thread pool's running task cannot be cancelled: waiting for it keeps it from
        writing after the run has returned. A Dask future always cancels, though its task
        may go on running on the worker; such a task finds its run's scratch directory gone
        and writes nothing (:meth:`.workers.TaskEnv.scratch`)."""
        # Only the standard library's futures: a Dask client's own cancel() returns None.
        running = [f for f in self._keys if not f.cancel() and isinstance(f, Future)]
        self._keys.clear()
        wait(running)


def _probe(marker: str, expected: str, base_dir: str, output_dir: str) -> str:
    """Run on a worker: what it cannot see of the run's directories ("" when all is well)."""
    problems = []
    if not Path(base_dir).is_dir():
        problems.append(f"the forge file's directory {base_dir} does not exist there")
    try:
        seen = Path(marker).read_text()
    except OSError as exc:
        problems.append(f"cannot read {marker} ({exc.strerror or exc})")
    else:
        if seen != expected:
            problems.append(f"{output_dir} there is not this machine's {output_dir}")
    return "; ".join(problems)


def check_shared(
    executor: Executor, base_dir: Path, output_dir: Path, state_dir: Path, timeout: float = 120
) -> None:
    """Raise :class:`BuildError` unless ``executor``'s workers see ``base_dir`` and the very
    same ``output_dir`` (a random marker written here, read there)."""
    if in_process(executor):
        return
    marker = state_dir / f"farm-probe-{secrets.token_hex(8)}"
    expected = secrets.token_hex(16)
    atomic_write_text(marker, expected)
    args = (str(marker), expected, str(base_dir), str(output_dir))
    try:
        client = _dask_client(executor)
        if client is not None and hasattr(client, "run"):
            answers: dict[str, str] = client.run(_probe, *args)  # every worker
        else:
            answers = {"a worker": executor.submit(_probe, *args).result(timeout=timeout)}
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise BuildError(f"cannot reach the executor's workers: {why}") from None
    finally:
        marker.unlink(missing_ok=True)
    if not answers:  # an adaptive cluster scaled to nothing: tasks would wait forever
        raise BuildError(
            "the executor has no workers: start some (or scale the cluster up) before the run"
        )
    bad = {w: p for w, p in sorted(answers.items()) if p}
    if bad:
        listed = "".join(f"\n  {w}: {p}" for w, p in bad.items())
        raise BuildError(
            f"{len(bad)} worker(s) of the executor do not share this run's directories; "
            f"mount them at the same paths on every worker (docs/build-farm.md):{listed}"
        )


def submitter(executor: Executor) -> Callable[..., Future[Any]]:
    """``executor.submit``, with submission failures (a task that does not pickle, a closed
    cluster) as a :class:`BuildError`."""

    def submit(fn: Callable[..., Any], *args: Any) -> Future[Any]:
        try:
            return executor.submit(fn, *args)
        except Exception as exc:
            raise BuildError(
                f"cannot hand a step to the executor: {type(exc).__name__}: {exc}"
            ) from None

    return submit


@contextmanager
def scheduler_executor(
    address: str | None = None, *, scheduler_file: str | None = None, timeout: float = 30.0
) -> Iterator[Executor]:
    """An executor for :meth:`Forge.run` on the Dask cluster whose scheduler is at
    ``address`` (``tcp://host:8786``, ``tls://...``) or described by ``scheduler_file``
    (what ``dask scheduler --scheduler-file`` writes); closed on exit. TLS settings come
    from Dask's own configuration (``distributed.comm.tls.*``: its YAML files or
    ``DASK_DISTRIBUTED__COMM__TLS__...`` variables). What ``edgekit forge --scheduler``
    uses."""
    if (address is None) == (scheduler_file is None):
        raise ConfigError.single("scheduler", "give a scheduler address or a scheduler file")
    try:
        from distributed import Client
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            f"a Dask scheduler needs the 'dask' extra ({exc.name} is not installed): "
            "pip install 'edgekit[dask]'"
        ) from None
    where = address or f"the scheduler file {scheduler_file}"
    _reachable(address, scheduler_file, where, timeout)
    try:
        client = Client(  # type: ignore[no-untyped-call]
            address, scheduler_file=scheduler_file, timeout=timeout, set_as_default=False
        )
    except (OSError, TimeoutError, ValueError) as exc:
        raise BuildError(f"cannot reach the Dask scheduler at {where}: {exc}") from None
    with client:
        executor: Executor = client.get_executor()  # type: ignore[no-untyped-call]
        yield executor


def _reachable(address: str | None, scheduler_file: str | None, where: str, timeout: float) -> None:
    """Refuse an unreachable scheduler before a ``Client`` exists: one that fails to connect
    leaves a half-started client whose finaliser prints a traceback at exit."""
    if scheduler_file is not None:
        try:
            info = json.loads(Path(scheduler_file).read_text())
            address = str(info["address"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BuildError(f"cannot read {where}: {exc}") from None
    assert address is not None
    scheme, sep, rest = address.rpartition("://")
    host, _, port = rest.rpartition(":")
    if not sep or scheme not in ("tcp", "tls") or not host or not port.isdigit():
        raise ConfigError.single(
            "scheduler", f"{address!r} is not a scheduler address (tcp://host:port or tls://...)"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise BuildError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
