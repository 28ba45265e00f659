"""Publishing a file atomically: how both twins' ``save`` put an image in place (docs/architecture.md#the-image).

Neutral on purpose (imports nothing of tcpmgm), so that the compiled matcher
can use it without importing its pure twin.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable

__all__ = ["publish"]


def publish(path: str | os.PathLike[str], write: Callable[[int], None]) -> None:
    """Put a new file at ``path`` written by ``write(fd)``, atomically: ``write`` fills a new
    temporary file in the same folder, which is flushed to disk (fsync) and renamed over
    ``path`` (``os.replace``), then the folder is synced.  A process opening ``path`` gets the
    old file or the new one, never a part of one; on any failure the temporary file is
    removed and ``path`` is left as it was."""
    target = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(target))
    temporary = os.path.join(folder, f".{os.path.basename(target)}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # O_EXCL: the name is new; mode 0o666 less the umask, as for any file the program writes.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        try:
            write(fd)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    _sync_folder(folder)


def _sync_folder(folder: str) -> None:
    """fsync the folder, so that the rename survives a crash of the machine (where a folder
    can be opened and synced: not everywhere)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
