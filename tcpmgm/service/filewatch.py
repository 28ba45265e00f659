"""Notice a new file at a path: how a worker learns that a new rule image was published.

A publisher replaces the file by an atomic rename (``Matcher.save`` does:
docs/operations.md#serving-many-workers-from-one-image), so the path names
either the old file or the new one, never a half-written one.  A
:class:`FileWatcher` calls ``on_change()`` from a thread of its own when the
path has been given a new file.  It learns of one in one of two ways:

- **inotify** (Linux, through ``ctypes``: no extension, no dependency): a
  watch on the file's *directory* for ``IN_MOVED_TO`` (a rename onto the
  path) and ``IN_CLOSE_WRITE`` (a writer that wrote the path in place),
  filtered by the file's name.  A watch on the file itself would follow the
  old inode and never hear of the rename.  A new file is noticed at once;
  idle, one ``os.stat`` of the directory every ``interval`` seconds checks
  that it is still the one watched (a directory removed or replaced: the
  watcher polls from then on).
- **poll** (anywhere, and where inotify fails: no ``libc`` symbol, the
  per-user watch limit reached): ``os.stat`` every ``interval`` seconds,
  compared as ``(st_dev, st_ino, st_mtime_ns, st_size)``.  A rename gives the
  path another inode, so a new file is noticed even within one tick of the
  file system's clock.

A watcher belongs to the process that started it.  After ``os.fork()`` the
child has no watcher thread (threads do not survive a fork) but inherits its
file descriptors; the watcher knows it by its pid: in the child, :attr:`running`
is False, :meth:`stop` only closes the child's copies of the descriptors (it
never wakes the parent's thread) and :meth:`start` starts a watcher of the
child's own.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import select
import struct
import sys
import threading
from typing import Callable

__all__ = ["METHODS", "FileWatcher", "file_identity"]

log = logging.getLogger(__name__)

METHODS = ("auto", "inotify", "poll")

# <sys/inotify.h>
_IN_CLOSE_WRITE = 0x00000008
_IN_MOVED_TO = 0x00000080
_IN_Q_OVERFLOW = 0x00004000  # events were lost: the path may have changed
_IN_IGNORED = 0x00008000  # the watch is gone (the directory was removed or unmounted)
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then len bytes of name
_READ_SIZE = 64 * 1024  # bytes per read of the inotify descriptor: hundreds of events


class _Inotify:
    """One inotify instance watching one directory (the descriptor is non-blocking and close-on-exec)."""

    def __init__(self, directory: str) -> None:
        if not sys.platform.startswith("linux"):
            raise OSError(errno.ENOSYS, "inotify is Linux only")
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        try:
            init1, add_watch = libc.inotify_init1, libc.inotify_add_watch
        except AttributeError:
            raise OSError(errno.ENOSYS, "this C library has no inotify") from None
        init1.argtypes, init1.restype = [ctypes.c_int], ctypes.c_int
        add_watch.argtypes, add_watch.restype = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32], ctypes.c_int
        fd = init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        if add_watch(fd, os.fsencode(directory), _IN_MOVED_TO | _IN_CLOSE_WRITE) < 0:
            err = ctypes.get_errno()
            os.close(fd)
            raise OSError(err, f"inotify_add_watch {directory}: {os.strerror(err)}")
        self.fd = fd
        self.directory = directory
        self.watched = _directory_identity(directory)  # the directory the watch is on

    def still_watched(self) -> bool:
        """Whether the directory at the path is still the one watched.  The kernel ends a watch
        (IN_IGNORED) only when the directory's inode goes, and a mapped image in it keeps the
        inode of a removed directory alive: the watch then stays on it, silent."""
        return _directory_identity(self.directory) == self.watched

    def changes(self, name: bytes) -> tuple[bool, bool]:
        """Read the pending events: (the file ``name`` got new content, the watch is gone)."""
        changed = gone = False
        while True:
            try:
                data = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return changed, gone
            offset = 0
            while offset + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                event_name = data[offset : offset + length].rstrip(b"\0")
                offset += length
                if mask & _IN_Q_OVERFLOW or (mask & (_IN_MOVED_TO | _IN_CLOSE_WRITE) and event_name == name):
                    changed = True
                if mask & _IN_IGNORED:
                    gone = True

    def close(self) -> None:
        os.close(self.fd)


def _directory_identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def file_identity(path: str) -> tuple[int, int, int, int] | None:
    """Which file ``path`` names, as the poll compares it: another file at the path (a rename: another
    inode), or the same one rewritten, gives another value; ``None``: no file there."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size


class FileWatcher:
    """Call ``on_change()`` from a background thread whenever ``path`` is given a new file.

    ``method``: ``"auto"`` (inotify where it works, else poll), ``"inotify"``
    (an error where it does not work) or ``"poll"``.  ``interval``: seconds
    between two polls.  ``on_change`` runs on the watcher's thread; an exception
    in it is logged, and the watching goes on.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        on_change: Callable[[], object],
        *,
        method: str = "auto",
        interval: float = 1.0,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}, not {method!r}")
        if not interval > 0:
            raise ValueError(f"interval must be a positive number of seconds, not {interval!r}")
        self.path = os.path.abspath(os.fspath(path))
        self.on_change = on_change
        self.method = method
        self.interval = interval
        self.active_method: str | None = None  # what is in use: "inotify" or "poll"
        self._inotify: _Inotify | None = None
        self._wake: tuple[int, int] | None = None  # a pipe: stop() writes, the inotify wait wakes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()  # the process whose thread this is

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<FileWatcher {self.path} {self.active_method or self.method} {state}>"

    @property
    def running(self) -> bool:
        """Whether this process's watcher thread is running (in a forked child: False)."""
        return self._pid == os.getpid() and self._thread is not None and self._thread.is_alive()

    def start(self) -> FileWatcher:
        """Start watching (again, in a forked child); armed when this returns.

        A file published after ``start()`` returns is noticed: the inotify watch
        is set up, or the poll's first ``os.stat`` taken, before it returns.
        """
        self._forget_parent()
        if self.running:
            return self
        self._close_descriptors()  # of a thread that ended
        self._stop.clear()
        self.active_method = "poll"
        if self.method != "poll":
            try:
                inotify = _Inotify(os.path.dirname(self.path))
            except OSError as exc:
                if self.method == "inotify":
                    raise
                log.info("no inotify for %s (%s): polling every %.2f s", self.path, exc, self.interval)
            else:
                self._inotify = inotify
                self._wake = os.pipe()
                self.active_method = "inotify"
        run: Callable[[], None] = self._run_inotify
        if self.active_method == "poll":
            # The first stat taken now: a file published from here on differs from it.
            run = functools.partial(self._run_poll, file_identity(self.path))
        self._thread = threading.Thread(target=run, name=f"tcpmgm-image-{os.path.basename(self.path)}", daemon=True)
        self._thread.start()
        log.info("watching %s for new images (%s)", self.path, self.active_method)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and close its descriptors; waits up to ``timeout`` seconds."""
        if self._forget_parent():
            return
        self._stop.set()
        if self._wake is not None:
            with contextlib.suppress(OSError):
                os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close_descriptors()

    def _forget_parent(self) -> bool:
        """In a forked child: drop the parent's watcher (close the inherited descriptors, never
        signal them: the parent's thread waits on them); True when there was one to drop."""
        if self._pid == os.getpid():
            return False
        self._pid = os.getpid()
        self._thread = None
        self._close_descriptors()
        return True

    def _close_descriptors(self) -> None:
        inotify, wake = self._inotify, self._wake
        self._inotify = self._wake = None
        if inotify is not None:
            inotify.close()
        for fd in wake or ():
            os.close(fd)

    # -- the thread ----------------------------------------------------------
    def _changed(self) -> None:
        try:
            self.on_change()
        except Exception:
            log.exception("handling the new file at %s failed", self.path)

    def _run_inotify(self) -> None:
        inotify, wake = self._inotify, self._wake
        assert inotify is not None and wake is not None
        name = os.fsencode(os.path.basename(self.path))
        waiting = select.poll()
        waiting.register(inotify.fd, select.POLLIN)
        waiting.register(wake[0], select.POLLIN)
        while not self._stop.is_set():
            # Woken by an event or by stop() (through the pipe), or after `interval` to check the directory.
            waiting.poll(self.interval * 1000)
            if self._stop.is_set():
                return
            changed, gone = inotify.changes(name)
            if changed:
                self._changed()
            if gone or not inotify.still_watched():
                log.warning(
                    "the directory of %s was removed or replaced: polling every %.2f s", self.path, self.interval
                )
                self.active_method = "poll"
                now = file_identity(self.path)
                if now is not None:
                    self._changed()  # whatever the new directory holds already
                self._run_poll(now)
                return

    def _run_poll(self, last: tuple[int, int, int, int] | None) -> None:
        while not self._stop.wait(self.interval):
            now = file_identity(self.path)
            if now != last and now is not None:
                self._changed()
            last = now
