"""Layer compression on every core, with bytes that never depend on the number of cores.

Both compressors take the uncompressed tar stream from the producer (the main thread), cut
it into fixed chunks, and hand the compressed bytes, in order, to a sink (the blob writer,
which hashes them into the layer's ``digest``). The producer does not hash: one thread of
ours computes the ``diff_id`` (sha256 of the tar, and gzip's CRC-32) beside it, since
hashlib and zlib release the GIL for large buffers; profiling a 500 MB layer showed those
hashes as the producer's largest cost after compression itself.

* **gzip** is compressed pigz-style: the stream is cut into fixed 1 MiB chunks, each is
  deflated on a thread pool (zlib releases the GIL) as raw deflate primed with the 32 KiB
  before it and ending with a sync flush, so the pieces concatenate into one deflate stream
  inside one gzip member, closed by an empty final block and the CRC-32/ISIZE trailer. The
  bytes depend only on the data, the level and the chunk size.
* **zstd** uses libzstd's own multi-threaded mode with a fixed job size. zstd documents, and
  a test checks, that this output does not depend on the number of workers (1 or many);
  single-threaded mode (``threads=0``) frames differently, so it is never used.
"""

from __future__ import annotations

import hashlib
import os
import queue
import struct
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, Protocol, TypeVar

import zstandard

from edgekit.errors import BuildError

__all__ = [
    "GZIP_CHUNK",
    "WORKERS_ENV",
    "LayerCompressor",
    "Sink",
    "open_compressor",
    "resolve_workers",
]

#: Environment variable that sets the default worker count (else every core).
WORKERS_ENV = "EDGEKIT_LAYER_WORKERS"
#: gzip chunk size. Part of the output format: changing it changes every gzip layer's bytes.
#: Each chunk costs a few GIL hand-offs between threads, and on a busy machine each hand-off
#: waits for the receiving thread to be scheduled: 256 KiB chunks measured ~1.2-1.4x slower
#: in wall time there than 1 MiB ones (same CPU time, same size within 0.01%).
GZIP_CHUNK = 1 << 20
_GZIP_WINDOW = 32 << 10
#: At most this many gzip chunks in flight (read, being deflated, or waiting to be written):
#: ~2 MiB each with its output and zlib state, so memory stays bounded on big machines.
_GZIP_MAX_IN_FLIGHT = 24
# gzip member header: no flags, mtime 0, no extra flags, OS 255 ("unknown", not the host's).
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
_DEFLATE_FINAL_EMPTY = b"\x03\x00"  # an empty fixed-Huffman block with BFINAL set

#: zstd job size. Part of the output format (a fixed value, never derived from the core
#: count). 2 MiB costs ~0.6% in size against zstd's 8 MiB default at level 3 and keeps each
#: worker's buffers near 7 MiB instead of ~25 MiB.
_ZSTD_JOB = 2 << 20
#: zstd workers beyond this cannot help: at level 3 four of them outrun the Python tar
#: producer and its sha256, and each one costs buffers (bytes do not depend on this number).
_ZSTD_MAX_THREADS = 4
_ZSTD_FEED = 1 << 20


def resolve_workers(workers: int | None = None) -> int:
    """``workers``, else ``$EDGEKIT_LAYER_WORKERS``, else every core (``os.cpu_count()``)."""
    if workers is None:
        env = os.environ.get(WORKERS_ENV, "")
        if env == "":
            return os.cpu_count() or 1
        try:
            workers = int(env)
        except ValueError:
            raise BuildError(f"{WORKERS_ENV}={env!r} is not an integer") from None
        if workers < 1:
            raise BuildError(f"{WORKERS_ENV}={env!r} must be at least 1")
        return workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise BuildError(f"layer compression workers must be a positive integer (got {workers!r})")
    return workers


class Sink(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...


class LayerCompressor(Protocol):
    """What the tar producer writes into."""

    @property
    def diff_hash(self) -> hashlib._Hash: ...
    def write(self, data: bytes) -> None: ...
    def close(self) -> None: ...
    def abandon(self) -> None: ...


class _Cutter:
    """Cuts a stream of writes into chunks of exactly ``size`` bytes (the last may be short).

    Boundaries decide the compressed bytes, so they must not depend on how the producer
    happened to split its writes.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        size = self._size
        if len(buf) < size:
            return []  # the common case for small tar pieces: one append, nothing else
        whole = len(buf) - len(buf) % size
        with memoryview(buf) as view:
            out = [bytes(view[pos : pos + size]) for pos in range(0, whole, size)]
        del buf[:whole]
        return out

    def rest(self) -> bytes:
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


_T = TypeVar("_T")


class _Stage(Generic[_T]):
    """One thread applying ``fn`` to items in order, fed through a bounded queue.

    The producer thread then only cuts and hands on: hashing (hashlib and zlib.crc32 release
    the GIL for large buffers) and writing run beside it on another core. An error in ``fn``
    is raised to the producer by the next :meth:`put` or by :meth:`close`.
    """

    def __init__(self, name: str, fn: Callable[[_T], None], depth: int) -> None:
        self._fn = fn
        self._queue: queue.Queue[_T | None] = queue.Queue(depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._fn(item)
                except BaseException as exc:  # handed to the producer
                    self._error = exc

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def put(self, item: _T) -> None:
        self._raise()
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise()

    def abandon(self) -> None:
        self._error = self._error or BuildError("layer compression abandoned")
        self._queue.put(None)
        self._thread.join()


class _DiffHash:
    """The uncompressed stream's sha256 (the diff_id) and, for gzip, its CRC-32 and size."""

    def __init__(self, crc: bool) -> None:
        self.hash = hashlib.sha256()
        self.crc = 0
        self.size = 0
        self._with_crc = crc

    def update(self, chunk: bytes) -> None:
        self.hash.update(chunk)
        if self._with_crc:
            self.crc = zlib.crc32(chunk, self.crc)
            self.size += len(chunk)


#: Chunks (1 MiB each) queued for the hash thread. Kept small: sha256 outruns both
#: compressors, and a 500 MB zstd build (with a writer thread too) peaked at 103 MiB RSS with
#: 8 here, 92 MiB with 2.
_HASH_DEPTH = 2


def _deflate_chunk(chunk: bytes, window: bytes, level: int) -> bytes:
    """Raw deflate of one chunk, primed with the 32 KiB before it, ending byte-aligned."""
    if window:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, window)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(chunk) + c.flush(zlib.Z_SYNC_FLUSH)


class _ParallelGzip:
    """pigz-style gzip: the main thread cuts; a pool deflates; one thread hashes the input
    (diff_id, CRC-32) and another writes the deflated pieces, in order, into the sink."""

    def __init__(self, level: int, sink: Sink, workers: int) -> None:
        self._level = level
        self._sink = sink
        self._cutter = _Cutter(GZIP_CHUNK)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgekit-gzip")
        # Two chunks per worker, and never fewer than 6: on a busy machine the producer is
        # often descheduled, and the workers must not run dry meanwhile.
        in_flight = min(max(2 * workers, 6), _GZIP_MAX_IN_FLIGHT)
        self._pending: set[Future[bytes]] = set()
        self._window = b""
        self._diff = _DiffHash(crc=True)
        self._sink.write(_GZIP_HEADER)
        self._hasher: _Stage[bytes] = _Stage("edgekit-diff-hash", self._diff.update, _HASH_DEPTH)
        self._writer: _Stage[Future[bytes]] = _Stage("edgekit-gzip-out", self._write, in_flight)

    @property
    def diff_hash(self) -> hashlib._Hash:
        return self._diff.hash

    def _write(self, future: Future[bytes]) -> None:
        self._sink.write(future.result())
        self._pending.discard(future)

    def _submit(self, chunk: bytes) -> None:
        self._hasher.put(chunk)
        future = self._pool.submit(_deflate_chunk, chunk, self._window, self._level)
        self._pending.add(future)
        self._writer.put(future)  # blocks while in_flight pieces wait to be written
        self._window = chunk[-_GZIP_WINDOW:]

    def write(self, data: bytes) -> None:
        for chunk in self._cutter.feed(data):
            self._submit(chunk)

    def close(self) -> None:
        try:
            rest = self._cutter.rest()
            if rest:
                self._submit(rest)
            self._hasher.close()
            self._writer.close()
            self._sink.write(_DEFLATE_FINAL_EMPTY)
            self._sink.write(struct.pack("<II", self._diff.crc, self._diff.size & 0xFFFFFFFF))
        except BaseException:
            self.abandon()
            raise
        finally:
            self._pool.shutdown(wait=True)

    def abandon(self) -> None:
        for f in list(self._pending):
            f.cancel()
        self._hasher.abandon()
        self._writer.abandon()
        self._pool.shutdown(wait=True)


def zstd_compressor(level: int, workers: int) -> zstandard.ZstdCompressionObj:
    """libzstd multi-threaded mode (never ``threads=0``, whose framing differs)."""
    params = zstandard.ZstdCompressionParameters.from_level(
        level,
        threads=max(1, min(workers, _ZSTD_MAX_THREADS)),
        job_size=_ZSTD_JOB,
        write_content_size=False,
    )
    return zstandard.ZstdCompressor(compression_params=params).compressobj()


class _Zstd:
    """libzstd compresses on its own threads; this thread feeds it and writes its output
    into the sink, and one thread of ours hashes the input (the diff_id).

    Writing on another thread as well measured no faster (the producer mostly waits for
    libzstd's workers) and held up to ~10 MiB more of output in flight.
    """

    def __init__(self, level: int, sink: Sink, workers: int) -> None:
        self._compressor = zstd_compressor(level, workers)
        self._cutter = _Cutter(_ZSTD_FEED)
        self._diff = _DiffHash(crc=False)
        self._hasher: _Stage[bytes] = _Stage("edgekit-diff-hash", self._diff.update, _HASH_DEPTH)
        self._sink = sink

    @property
    def diff_hash(self) -> hashlib._Hash:
        return self._diff.hash

    def _put(self, chunk: bytes) -> None:
        self._hasher.put(chunk)
        out = self._compressor.compress(chunk)
        if out:
            self._sink.write(out)

    def write(self, data: bytes) -> None:
        for chunk in self._cutter.feed(data):
            self._put(chunk)

    def close(self) -> None:
        try:
            rest = self._cutter.rest()
            if rest:
                self._put(rest)
            self._hasher.close()
            self._sink.write(self._compressor.flush())
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        self._hasher.abandon()  # libzstd's workers are joined when the compressor is freed


def open_compressor(compression: str, level: int, sink: Sink, workers: int) -> LayerCompressor:
    """A compressor writing ``compression`` (gzip or zstd) at ``level`` into ``sink``."""
    if compression == "gzip":
        return _ParallelGzip(level, sink, workers)
    return _Zstd(level, sink, workers)
