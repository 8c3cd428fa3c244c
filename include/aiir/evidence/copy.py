"""Copy a file into the bundle and hash it in the same pass; memory stays flat whatever the size.

Measured on the build machine (see ``docs/benchmarks.md``): hashing is the bottleneck (SHA-256 runs
at OpenSSL speed through ``hashlib``), so the copy is moved off the hashing thread:

* files of ``PIPELINE_MIN`` bytes or more: a copier thread moves fixed-size chunks with
  ``os.copy_file_range`` (kernel-side, no user-space copy) while the calling thread maps each finished
  chunk of the *destination* read-only and hashes it straight from the page cache (``pread`` if mapping
  fails). The digest is therefore the digest of the bytes stored in the bundle, no byte is copied
  through user space, and copy and hash overlap on two cores.
* where ``copy_file_range`` is not supported (another filesystem type, old kernel) the fallback reads
  and hashes on the calling thread and writes on a writer thread from a small ring of buffers.
* small files: one thread, one buffer.

Both threads release the GIL during the heavy work (``hashlib`` for updates over 2 KiB, and the
``os`` calls), and only ``CHUNK``-sized buffers are ever held, so peak RSS does not grow with file size.

The source is opened with ``O_NONBLOCK`` and checked to be a regular file *after* opening, so a FIFO
or device planted where a file was expected can neither hang nor feed the copy. A file still being
written is captured up to the size it had when the copy started.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import queue
import stat
import threading
from pathlib import Path

from aiir.errors import BadInput

CHUNK = 16 << 20  # 16 MiB: large enough to amortise syscalls, small enough to stay flat
PIPELINE_MIN = 8 << 20
_CFR_UNSUPPORTED = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM}


def open_regular(path: str | Path, *, follow_symlinks: bool = True) -> tuple[int, os.stat_result]:
    """Open ``path`` read-only and return (fd, stat); refuses anything but a regular file."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise BadInput(str(path), "no such file") from None
    except IsADirectoryError:
        raise BadInput(str(path), "is a folder, expected a file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BadInput(str(path), "is a symbolic link") from None
        raise BadInput(str(path), f"cannot open: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise BadInput(str(path), "is a folder, expected a file" if stat.S_ISDIR(st.st_mode)
                       else "is not a regular file (FIFO, socket or device)")
    os.set_blocking(fd, True)
    return fd, st


def read_regular(path: str | Path, *, follow_symlinks: bool = False) -> bytes:
    """The whole content of a regular file; BadInput for anything else (a FIFO cannot block the reader)."""
    fd, _ = open_regular(path, follow_symlinks=follow_symlinks)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def _fadvise_sequential(fd: int) -> None:
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
    except (AttributeError, OSError):
        pass


def hash_fd(fd: int, limit: int | None = None, chunk: int = CHUNK) -> tuple[str, int]:
    """SHA-256 of an open file from offset 0 (up to ``limit`` bytes): (hexdigest, bytes read)."""
    _fadvise_sequential(fd)
    h = hashlib.sha256()
    buf = bytearray(chunk)
    view = memoryview(buf)
    off = 0
    while limit is None or off < limit:
        want = chunk if limit is None else min(chunk, limit - off)
        n = os.preadv(fd, [view[:want]], off)
        if not n:
            break
        h.update(view[:n])
        off += n
    return h.hexdigest(), off


def hash_file(path: str | Path, *, follow_symlinks: bool = True) -> tuple[str, int]:
    """SHA-256 of a regular file: (hexdigest, size)."""
    fd, _ = open_regular(path, follow_symlinks=follow_symlinks)
    try:
        return hash_fd(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, view: memoryview) -> None:
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _simple(fi: int, fo: int, size: int, chunk: int) -> tuple[str, int]:
    h = hashlib.sha256()
    buf = bytearray(min(chunk, max(size, 1 << 16)))
    view = memoryview(buf)
    off = 0
    while off < size:
        n = os.readv(fi, [view[: min(len(buf), size - off)]])
        if not n:
            break
        h.update(view[:n])
        _write_all(fo, view[:n])
        off += n
    return h.hexdigest(), off


class _Stop(Exception):
    pass


def _cfr_pipeline(fi: int, fo: int, size: int, chunk: int) -> tuple[str, int]:
    """copy_file_range in a copier thread; hash of the destination (mmap, else pread) here.

    Raises OSError with an errno in ``_CFR_UNSUPPORTED`` if the very first copy is refused, before
    any byte was written, so the caller can fall back.
    """
    done_q: queue.Queue = queue.Queue(maxsize=4)
    stop = threading.Event()
    failure: list[BaseException] = []

    def put(item) -> None:
        while True:
            if stop.is_set():
                raise _Stop
            try:
                done_q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def copier() -> None:
        off = 0
        try:
            while off < size:
                want = min(chunk, size - off)
                got = 0
                while got < want:
                    n = os.copy_file_range(fi, fo, want - got, off + got, off + got)
                    if n == 0:
                        break
                    got += n
                if got:
                    put((off, got))
                off += got
                if got < want:  # source shrank while we copied
                    break
            put(None)
        except _Stop:
            pass
        except BaseException as exc:  # handed to the hashing thread
            failure.append(exc)
            try:
                put(None)
            except _Stop:
                pass

    t = threading.Thread(target=copier, name="aiir-evidence-copy", daemon=True)
    t.start()
    h = hashlib.sha256()
    buf: bytearray | None = None
    total = 0
    try:
        while True:
            item = done_q.get()
            if item is None:
                break
            off, n = item
            try:  # hash straight from the page cache: no copy into user space
                with mmap.mmap(fo, n, offset=off, access=mmap.ACCESS_READ) as m:
                    if hasattr(m, "madvise"):
                        m.madvise(mmap.MADV_SEQUENTIAL)
                    h.update(m)
            except (OSError, ValueError):
                buf = buf or bytearray(chunk)
                view = memoryview(buf)
                got = 0
                while got < n:
                    k = os.preadv(fo, [view[got:n]], off + got)
                    if not k:
                        raise OSError(errno.EIO, "destination shorter than the bytes copied") from None
                    got += k
                h.update(view[:n])
            total += n
    finally:
        stop.set()
        t.join()
    if failure:
        raise failure[0]
    return h.hexdigest(), total


def _threaded(fi: int, fo: int, size: int, chunk: int, nbuf: int = 4) -> tuple[str, int]:
    """Read + hash here, write on a writer thread, ``nbuf`` buffers in a ring."""
    free: queue.Queue = queue.Queue()
    full: queue.Queue = queue.Queue()
    for _ in range(nbuf):
        free.put(bytearray(chunk))
    failure: list[BaseException] = []

    def writer() -> None:
        while True:
            item = full.get()
            if item is None:
                return
            b, n = item
            if not failure:
                try:
                    _write_all(fo, memoryview(b)[:n])
                except BaseException as exc:
                    failure.append(exc)
            free.put(b)

    t = threading.Thread(target=writer, name="aiir-evidence-write", daemon=True)
    t.start()
    h = hashlib.sha256()
    total = 0
    try:
        while total < size and not failure:
            b = free.get()
            view = memoryview(b)
            n = os.readv(fi, [view[: min(chunk, size - total)]])
            if not n:
                free.put(b)
                break
            h.update(view[:n])
            total += n
            full.put((b, n))
    finally:
        full.put(None)
        t.join()
    if failure:
        raise failure[0]
    return h.hexdigest(), total


def copy_and_hash(src: str | Path, dst: str | Path, *, chunk: int = CHUNK,
                  method: str = "auto") -> tuple[str, int]:
    """Copy regular file ``src`` to new file ``dst`` (must not exist) hashing in one pass.

    Returns (sha256 hex of the bytes written, size written). ``method`` is ``auto``, ``cfr``
    (copy_file_range pipeline), ``threaded`` or ``simple`` (the last three are for the benchmark).
    """
    fi, st = open_regular(src)
    try:
        _fadvise_sequential(fi)
        size = st.st_size
        fo = os.open(dst, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            if method == "simple" or (method == "auto" and size < PIPELINE_MIN):
                return _simple(fi, fo, size, chunk)
            if method == "threaded" or (method == "auto" and not hasattr(os, "copy_file_range")):
                return _threaded(fi, fo, size, chunk)
            try:
                return _cfr_pipeline(fi, fo, size, chunk)
            except OSError as exc:
                if method != "auto" or exc.errno not in _CFR_UNSUPPORTED or os.fstat(fo).st_size:
                    raise
                os.lseek(fi, 0, os.SEEK_SET)
                return _threaded(fi, fo, size, chunk)
        finally:
            os.close(fo)
    finally:
        os.close(fi)


def write_and_hash(data: bytes, dst: str | Path) -> tuple[str, int]:
    """Write ``data`` to new file ``dst`` (must not exist): (sha256 hex, size)."""
    fo = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        _write_all(fo, memoryview(data))
    finally:
        os.close(fo)
    return hashlib.sha256(data).hexdigest(), len(data)
