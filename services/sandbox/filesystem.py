"""The few filesystem operations a move makes, behind one seam a test can make fail.

``Filesystem`` is the real thing. Its ``rename`` never replaces anything: on Linux it is
``renameat2(RENAME_NOREPLACE)``; where that call is missing or the filesystem refuses the flag it
falls back to ``link`` + ``unlink`` for files (a crash in between leaves two names for one inode,
which the move recognises) and to a checked ``rename`` for folders (``os.rename`` alone would
silently replace an empty folder or a file). Tests subclass it to fail on the Nth call.
"""

import ctypes
import errno
import hashlib
import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

AT_FDCWD = -100
RENAME_NOREPLACE = 1
CHUNK = 1024 * 1024


def _load_renameat2():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_RENAMEAT2 = _load_renameat2()


class Filesystem:
    """Real filesystem calls. Every method raises ``OSError`` as the system call does."""

    def __init__(self, use_renameat2: bool = True) -> None:
        self._renameat2 = _RENAMEAT2 if use_renameat2 else None

    def rename(self, source: Path, target: Path) -> None:
        """Rename without replacing: ``FileExistsError`` if ``target`` exists, EXDEV across."""
        if self._renameat2 is not None:
            result = self._renameat2(AT_FDCWD, os.fsencode(source), AT_FDCWD,
                                     os.fsencode(target), RENAME_NOREPLACE)
            if result == 0:
                return
            code = ctypes.get_errno()
            if code not in (errno.ENOSYS, errno.EINVAL):
                raise OSError(code, os.strerror(code), str(source), None, str(target))
            log.warning("renameat2 without RENAME_NOREPLACE here; using link and unlink",
                        extra={"errno": code})
            self._renameat2 = None
        if stat.S_ISDIR(os.lstat(source).st_mode):
            if os.path.lexists(target):
                raise FileExistsError(errno.EEXIST, "target exists", str(target))
            os.rename(source, target)
            return
        self.link(source, target)
        self.unlink(source)

    def link(self, source: Path, target: Path) -> None:
        os.link(source, target, follow_symlinks=False)

    def unlink(self, path: Path) -> None:
        os.unlink(path)

    def mkdir(self, path: Path) -> None:
        os.mkdir(path, 0o750)

    def rmdir(self, path: Path) -> None:
        os.rmdir(path)

    def copy(self, source: Path, target: Path) -> str:
        """Copy a regular file's bytes to ``target`` (created or truncated), synced to disk.

        Returns the SHA-256 of the bytes read, for the caller to check the copy against.
        """
        digest = hashlib.sha256()
        flags_in = os.O_RDONLY | os.O_NOFOLLOW
        flags_out = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        with open(os.open(source, flags_in), "rb") as reader, \
                open(os.open(target, flags_out, 0o640), "wb") as writer:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
                writer.write(chunk)
            writer.flush()
            os.fsync(writer.fileno())
        return digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
