"""Layer compression on every core, with bytes that never depend on the number of cores.

Both compressors take the uncompressed tar stream from the producer (the main thread), laid
into fixed-size blocks in place (:class:`_Blocks`), and hand the compressed bytes, in order,
to a sink (the blob writer, which hashes them into the layer's ``digest``). The producer
does not hash: one thread of ours computes the ``diff_id`` (sha256 of the tar, and gzip's
CRC-32) beside it, since hashlib and zlib release the GIL for large buffers; profiling a
500 MB layer showed those hashes as the producer's largest cost after compression itself.

* **gzip** is compressed pigz-style: the stream is cut into fixed 1 MiB chunks, each is
  deflated on a thread pool (zlib releases the GIL) as raw deflate primed with the 32 KiB
  before it and ending with a sync flush, so the pieces concatenate into one deflate stream
  inside one gzip member, closed by an empty final block and the CRC-32/ISIZE trailer. The
  bytes depend only on the data, the level and the chunk size.
* **zstd** uses libzstd's own multi-threaded mode with a fixed job size. zstd documents, and
  tests check, that this output depends neither on the number of threads (1 or many) nor on
  how the input is split; single-threaded mode (``threads=0``) frames differently, so it is
  never used.
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
from typing import IO, Generic, Protocol, TypeVar, cast

import zstandard

from edgekit.errors import BuildError

__all__ = [
    "GZIP_CHUNK",
    "WORKERS_ENV",
    "ZSTD_JOB",
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
#: worker's buffers near 7 MiB instead of ~25 MiB. Larger jobs saved no CPU time: 500 MB
#: layer builds with 2, 3 or 4 MiB jobs and 2 to 4 threads all took 3.9 +- 0.2 CPU s
#: (5 interleaved runs each on the loaded 2-core machine; 8 MiB jobs, 2 runs, and libzstd
#: alone fed a .tar, likewise), and peaked at 88-100 MiB RSS with 4 MiB jobs and 111-135
#: MiB with 8 MiB ones.
ZSTD_JOB = 2 << 20
#: zstd threads beyond this cannot help: at level 3 four of them outrun the Python tar
#: producer and its sha256, and each one costs buffers (bytes do not depend on this number).
_ZSTD_MAX_THREADS = 4
#: Chunks (1 MiB each) queued for the hash thread. Kept small: sha256 outruns both
#: compressors, and a 500 MB zstd build (with a writer thread too) peaked at 103 MiB RSS with
#: 8 here, 92 MiB with 2.
_HASH_DEPTH = 2

#: Blocks the tar stream is laid into for zstd (any size gives the same bytes), and how many
#: exist: one being filled, up to ``_HASH_DEPTH`` queued for the hash thread, one hashing.
_ZSTD_BLOCK = 1 << 20
_ZSTD_BLOCKS = _HASH_DEPTH + 2
#: libzstd's output is drained through a buffer this large (see :class:`_Zstd`).
_ZSTD_OUT = 1 << 20


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
    def space(self) -> memoryview: ...
    def commit(self, n: int) -> None: ...
    def close(self) -> None: ...
    def abandon(self) -> None: ...


class _Blocks:
    """The tar stream laid into blocks of exactly ``size`` bytes (the last may be short).

    Boundaries decide the compressed bytes, so they must not depend on how the producer
    happened to split its writes. Small pieces (tar headers, padding, inline content) are
    copied in with :meth:`write`; file data is read straight into :meth:`space` and passed
    on with :meth:`commit`, so the bulk of the stream is copied once, by the kernel. A full
    block goes to :meth:`_emit`; :meth:`_next_block` gives the one to fill next (the same
    one if ``_emit`` copied what it needed, else a free one).
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._block = bytearray(size)
        self._view = memoryview(self._block)
        self._pos = 0

    def _emit(self, block: bytearray, n: int) -> None:
        raise NotImplementedError

    def _next_block(self) -> bytearray:
        return self._block

    def _full(self) -> None:
        self._emit(self._block, self._pos)
        self._pos = 0
        block = self._next_block()
        if block is not self._block:
            self._block = block
            self._view = memoryview(block)

    def write(self, data: bytes) -> None:
        pos = self._pos
        end = pos + len(data)
        if end < self._size:  # the common case for small tar pieces
            self._view[pos:end] = data
            self._pos = end
            return
        with memoryview(data) as src:
            done = 0
            while done < len(src):
                take = min(len(src) - done, self._size - self._pos)
                self._view[self._pos : self._pos + take] = src[done : done + take]
                self._pos += take
                done += take
                if self._pos == self._size:
                    self._full()

    def space(self) -> memoryview:
        """The free rest of the current block (never empty), to be filled and committed."""
        return self._view[self._pos :]

    def commit(self, n: int) -> None:
        """``n`` bytes were written at the start of :meth:`space`."""
        self._pos += n
        if self._pos == self._size:
            self._full()

    def _finish(self) -> None:
        if self._pos:
            self._emit(self._block, self._pos)
            self._pos = 0


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

    def check(self) -> None:
        """Raise the error ``fn`` raised, if any."""
        if self._error is not None:
            raise self._error

    def put(self, item: _T) -> None:
        self.check()
        self._queue.put(item)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self.check()

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


def _deflate_chunk(chunk: bytes, window: bytes, level: int) -> bytes:
    """Raw deflate of one chunk, primed with the 32 KiB before it, ending byte-aligned."""
    if window:
        c = zlib.compressobj(level, zlib.DEFLATED, -15, 8, zlib.Z_DEFAULT_STRATEGY, window)
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -15)
    return c.compress(chunk) + c.flush(zlib.Z_SYNC_FLUSH)


class _ParallelGzip(_Blocks):
    """pigz-style gzip: the main thread fills chunks; a pool deflates; one thread hashes the
    input (diff_id, CRC-32) and another writes the deflated pieces, in order, into the sink."""

    def __init__(self, level: int, sink: Sink, workers: int) -> None:
        super().__init__(GZIP_CHUNK)
        self._level = level
        self._sink = sink
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

    def _emit(self, block: bytearray, n: int) -> None:
        # One copy: the pool, the hasher and the next chunk's window share it, and the block
        # is filled again at once.
        with memoryview(block) as view:
            chunk = bytes(view[:n])
        self._hasher.put(chunk)
        future = self._pool.submit(_deflate_chunk, chunk, self._window, self._level)
        self._pending.add(future)
        self._writer.put(future)  # blocks while in_flight pieces wait to be written
        self._window = chunk[-_GZIP_WINDOW:]

    def close(self) -> None:
        try:
            self._finish()
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


def zstd_threads(workers: int) -> int:
    """libzstd threads for ``workers``: two per worker, at most ``_ZSTD_MAX_THREADS``.

    libzstd queues no more than one job beyond those its threads are compressing, so with
    one thread per core a producer descheduled on a busy machine left them idle. On the
    shared 2-core machine (load 5.7-7.5), 500 MB builds took a median 1.61x the time of
    ``tar | zstd -3 -T0`` with 4 threads against 2.22x with 2 (9 interleaved pairs each),
    for 6 MiB more peak RSS. The bytes do not depend on it (a test checks 1 to 4).
    """
    return min(2 * workers, _ZSTD_MAX_THREADS)


def _zstd_params(level: int, workers: int) -> zstandard.ZstdCompressionParameters:
    """libzstd multi-threaded mode (never ``threads=0``, whose framing differs)."""
    return zstandard.ZstdCompressionParameters.from_level(
        level,
        threads=zstd_threads(workers),
        job_size=ZSTD_JOB,
        write_content_size=False,
    )


def zstd_compressor(level: int, workers: int) -> zstandard.ZstdCompressionObj:
    """A one-shot-style compressor with the layer parameters (tests compare framings)."""
    return zstandard.ZstdCompressor(compression_params=_zstd_params(level, workers)).compressobj()


class _Zstd(_Blocks):
    """libzstd compresses on its own threads; the main thread fills blocks in place, hands
    each to libzstd (which copies it into its job buffers, without the GIL) and writes its
    output into the sink; one thread of ours hashes the blocks (the diff_id) and frees them.

    libzstd's multi-threaded output depends on its fixed job size, never on how the input
    is fed (a test feeds the same stream in different splits), so the block size is free.
    Output is drained through a buffer of ``_ZSTD_OUT``: with zstandard's default 128 KiB one
    per write, finished jobs waited to be drained and libzstd's workers idled.
    """

    def __init__(self, level: int, sink: Sink, workers: int) -> None:
        super().__init__(_ZSTD_BLOCK)
        compressor = zstandard.ZstdCompressor(compression_params=_zstd_params(level, workers))
        # zstandard only calls the sink's write(); its stubs ask for a whole IO[bytes].
        self._zw = compressor.stream_writer(
            cast("IO[bytes]", sink), write_size=_ZSTD_OUT, closefd=False
        )
        self._diff = _DiffHash(crc=False)
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._blocks = 1
        self._hasher: _Stage[tuple[bytearray, int]] = _Stage(
            "edgekit-diff-hash", self._hash_block, _HASH_DEPTH
        )

    @property
    def diff_hash(self) -> hashlib._Hash:
        return self._diff.hash

    def _hash_block(self, item: tuple[bytearray, int]) -> None:
        block, n = item
        try:
            with memoryview(block) as view:
                self._diff.hash.update(view[:n])
        finally:
            self._free.put(block)

    def _emit(self, block: bytearray, n: int) -> None:
        self._hasher.put((block, n))  # hashed on the other core while libzstd takes it
        with memoryview(block) as view:
            self._zw.write(view[:n])

    def _next_block(self) -> bytearray:
        if self._blocks < _ZSTD_BLOCKS:
            self._blocks += 1
            return bytearray(self._size)
        while True:
            try:
                return self._free.get(timeout=0.5)
            except queue.Empty:
                self._hasher.check()  # a failed hasher frees no more blocks

    def close(self) -> None:
        try:
            self._finish()
            self._hasher.close()
            self._zw.flush(zstandard.FLUSH_FRAME)
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
