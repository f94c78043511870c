"""Moving a claimed guest's folders into the user's: renames, never a replaced file.

The worker drives one ``Move`` in three filesystem steps, with the database in between:

1. ``stage``: the guest's folder is renamed (one atomic rename) to a staging folder named by the
   migration, ``<root>/guests/.moving-<migration id>``; ``plan`` counts what is there. The
   counts are stored before anything moves, so a rerun after a crash reports them whole.
2. ``run``: each area is renamed whole into the user's folder when the user has none of that
   name, else merged into it entry by entry, never nested. A file never replaces one of the
   user's: it takes a predictable new name beside it (``report (from guest 1a2b3c4d).csv``).
   Symbolic links and other special files are removed, never followed, never carried across.
   Where a rename cannot work (EXDEV), the file is copied to a temporary name beside its
   target, synced and checked (size and SHA-256), renamed into place without replacing, and
   only then removed from the guest's side.
3. ``clean``: once the step's event is committed, the journal and the empty staging folder go.

A small journal inside the staging folder (one empty-ish file per fact, so it is idempotent
and needs no memory) records which sources took a new name, which copies were placed, and
which temporary copies exist, so a rerun resumes without duplicating, losing or miscounting.
Every walk holds one open directory per level: memory follows depth, not the tree's size.
"""

import errno
import hashlib
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from services.sandbox import paths
from services.sandbox.filesystem import Filesystem, sha256_of

log = logging.getLogger(__name__)

JOURNAL = f"{paths.RESERVED_PREFIX}journal"
UPLOAD_PREFIX = f"{paths.RESERVED_PREFIX}upload-"
RENAMED, COPIED, PARTIAL, LINK = "renamed", "copied", "partial", "link"
MAX_CANDIDATES = 1000


@dataclass(frozen=True)
class Plan:
    """What the guest had when the move began: the counts ``SandboxMigrated`` reports."""

    directories: list[str] = field(default_factory=list)
    files: int = 0
    folders: int = 0
    bytes: int = 0
    links_skipped: int = 0


class CopyMismatch(OSError):
    """A cross-filesystem copy did not read back as the source; it is removed and retried."""


@dataclass
class _Frame:
    source: str | Path
    target: str | Path
    rel: str
    entries: object
    attempts: int = 1


def guest_name(name: str, tag: str, n: int, keep_suffix: bool = True) -> str:
    """The new name of a guest's entry beside a same-named one of the user's (n = 1, 2, ...)."""
    suffix = PurePosixPath(name).suffix if keep_suffix else ""
    if len(suffix) > 16:
        suffix = ""
    stem = name[: len(name) - len(suffix)]
    label = f" (from guest {tag})" if n == 1 else f" (from guest {tag} {n})"
    while stem and len(f"{stem}{label}{suffix}".encode()) > paths.MAX_NAME_BYTES:
        stem = stem[:-1]
    return f"{stem}{label}{suffix}"


class Move:
    def __init__(self, root: Path, guest_id: object, user_id: object, migration_id: object,
                 fs: Filesystem | None = None) -> None:
        self.root = root
        self.guest = paths.owner_id(guest_id)
        self.user = paths.owner_id(user_id)
        self.migration = paths.owner_id(migration_id)
        self.fs = fs or Filesystem()
        self.guest_dir = paths.owner_dir(root, "guest", self.guest)
        self.user_dir = paths.owner_dir(root, "user", self.user)
        self.staging = paths.staging_dir(root, self.migration)
        self.journal = self.staging / JOURNAL
        self.tag = self.guest[:8]
        self._resumed = False

    @property
    def _fields(self) -> dict[str, str]:
        return {"migration_id": self.migration, "guest_id": self.guest, "user_id": self.user}

    # 1. stage and count

    def stage(self) -> None:
        """Rename the guest's folder to the staging folder, unless an earlier run did."""
        if _lstat(self.staging) is not None or _lstat(self.guest_dir) is None:
            return
        self.fs.rename(self.guest_dir, self.staging)
        log.info("guest folder staged", extra=self._fields)

    def plan(self) -> Plan:
        """Count what is staged, removing links and special files on the way.

        Each removed link is noted in the journal first, so a rerun after a crash here still
        counts the links an earlier run removed.
        """
        info = _lstat(self.staging)
        if info is None:
            return Plan()
        if not stat.S_ISDIR(info.st_mode):
            return Plan(links_skipped=1)
        directories, files, folders, size = [], 0, 0, 0
        for area in paths.AREAS:
            top = self.staging / area
            info = _lstat(top)
            if info is None:
                continue
            if not stat.S_ISDIR(info.st_mode):
                self._skip_link(top, area)
                continue
            directories.append(area)
            for entry, rel in _entries_below(top, area):
                if entry.is_dir(follow_symlinks=False):
                    folders += 1
                elif entry.is_file(follow_symlinks=False):
                    files += 1
                    size += entry.stat(follow_symlinks=False).st_size
                else:
                    self._skip_link(Path(entry.path), rel)
        return Plan(directories, files, folders, size, self._count(LINK))

    def _skip_link(self, path: Path, rel: str) -> None:
        self._note(LINK, rel)
        self.fs.unlink(path)
        log.info("link not carried across", extra={**self._fields, "path": rel})

    # 2. move

    def run(self) -> int:
        """Move everything staged into the user's folder; returns how many took a new name."""
        info = _lstat(self.staging)
        if info is None:
            return 0
        if not stat.S_ISDIR(info.st_mode):
            self.fs.unlink(self.staging)
            return 0
        self._resumed = any(self._count(kind) for kind in (RENAMED, COPIED, PARTIAL))
        if self._resumed:
            log.info("resuming an interrupted move", extra=self._fields)
            self._remove_partials()
        paths.ensure_dir(self.user_dir)
        for area in paths.AREAS:
            source = self.staging / area
            info = _lstat(source)
            if info is None:
                continue
            if not stat.S_ISDIR(info.st_mode):
                self.fs.unlink(source)
                continue
            self._move_tree(source, self.user_dir / area, area)
        return self.renamed()

    def renamed(self) -> int:
        return self._count(RENAMED)

    def _count(self, kind: str) -> int:
        prefix = f"{kind}-"
        return sum(1 for entry in _scandir_or_empty(self.journal) if entry.name.startswith(prefix))

    def _move_tree(self, source: Path, target: Path, rel: str) -> None:
        into = self._place_dir(source, target, rel)
        if into is None:
            return
        frames = [_Frame(source, into, rel, os.scandir(source))]
        try:
            while frames:
                frame = frames[-1]
                entry = next(frame.entries, None)
                if entry is None:
                    frame.entries.close()
                    frames.pop()
                    self._finish_dir(frame, frames)
                    continue
                # Plain strings, not Path objects: pathlib interns every name it parses, and
                # CPython's table of interned strings would grow with the size of the tree.
                child, child_target = entry.path, os.path.join(frame.target, entry.name)
                child_rel = f"{frame.rel}/{entry.name}"
                if entry.is_dir(follow_symlinks=False):
                    into = self._place_dir(child, child_target, child_rel)
                    if into is not None:
                        frames.append(_Frame(child, into, child_rel, os.scandir(child)))
                elif entry.is_file(follow_symlinks=False):
                    self._place_file(child, child_target, child_rel)
                else:
                    self.fs.unlink(child)
        finally:
            for frame in frames:
                frame.entries.close()

    def _finish_dir(self, frame: _Frame, frames: list[_Frame]) -> None:
        try:
            self.fs.rmdir(frame.source)
        except OSError as exc:
            # A directory changed while it was read may list an entry late: read it again.
            if exc.errno != errno.ENOTEMPTY or frame.attempts >= 3:
                raise
            frames.append(_Frame(frame.source, frame.target, frame.rel,
                                 os.scandir(frame.source), frame.attempts + 1))

    def _place_dir(self, source: Path, target: Path, rel: str) -> Path | None:
        """Rename the folder whole (None) or return the user's folder to merge it into."""
        candidate = target
        for n in range(1, MAX_CANDIDATES):
            try:
                self.fs.rename(source, candidate)
                return None
            except FileExistsError:
                pass
            except OSError as exc:
                if exc.errno == errno.EXDEV:
                    try:
                        self.fs.mkdir(candidate)
                    except FileExistsError:
                        pass
                elif exc.errno != errno.ENOTEMPTY:
                    raise
            info = _lstat(candidate)
            if info is None:
                continue
            if stat.S_ISDIR(info.st_mode):
                return candidate
            self._note(RENAMED, rel)
            candidate = _beside(target, guest_name(os.path.basename(target), self.tag, n,
                                                   keep_suffix=False))
        raise RuntimeError(f"no free name for {rel}")

    def _place_file(self, source: Path, target: Path, rel: str) -> None:
        if self._resumed and self._already_copied(source, rel):
            return
        candidate, temp, n = target, None, 0
        while True:
            try:
                if temp is None:
                    self.fs.rename(source, candidate)
                else:
                    self._note(COPIED, rel, self._relative(candidate))
                    self.fs.rename(temp, candidate)
                break
            except FileExistsError:
                if temp is None and _same_file(source, candidate):
                    # An earlier run linked it here and stopped before unlinking the source.
                    self.fs.unlink(source)
                    break
            except OSError as exc:
                if exc.errno != errno.EXDEV or temp is not None:
                    raise
                temp = self._copy_beside(source, candidate, rel)
                continue
            n += 1
            if n >= MAX_CANDIDATES:
                raise RuntimeError(f"no free name for {rel}")
            self._note(RENAMED, rel)
            candidate = _beside(target, guest_name(os.path.basename(target), self.tag, n))
        if n == 0 and self._resumed:
            self._forget(RENAMED, rel)
        if temp is not None:
            self.fs.unlink(source)
            self._forget(PARTIAL, rel)
            self._forget(COPIED, rel)

    def _copy_beside(self, source: Path, candidate: Path, rel: str) -> Path:
        """Copy across filesystems to a temporary name beside the target, then check it."""
        temp = _beside(candidate, f"{paths.RESERVED_PREFIX}partial-{self.tag}-{_key(rel)[:16]}")
        self._note(PARTIAL, rel, self._relative(temp))
        digest = self.fs.copy(source, temp)
        source_info = os.lstat(source)
        if os.lstat(temp).st_size != source_info.st_size or sha256_of(temp) != digest:
            self.fs.unlink(temp)
            raise CopyMismatch(errno.EIO, f"copy of {rel} does not match its source")
        os.utime(temp, ns=(source_info.st_atime_ns, source_info.st_mtime_ns))
        log.debug("copied across filesystems", extra={**self._fields, "path": rel})
        return temp

    def _already_copied(self, source: Path, rel: str) -> bool:
        """After a crash between placing a copy and removing its source: just remove it."""
        recorded = self._read(COPIED, rel)
        if recorded is None:
            return False
        placed = self.root / recorded
        info = _lstat(placed)
        if info is None or not stat.S_ISREG(info.st_mode):
            return False
        if info.st_size != os.lstat(source).st_size or sha256_of(placed) != sha256_of(source):
            return False
        self.fs.unlink(source)
        self._forget(PARTIAL, rel)
        self._forget(COPIED, rel)
        return True

    def _remove_partials(self) -> None:
        prefix = f"{PARTIAL}-"
        for entry in _scandir_or_empty(self.journal):
            if not entry.name.startswith(prefix):
                continue
            with open(entry.path, encoding="utf-8") as marker:
                temp = self.root / marker.read()
            info = _lstat(temp)
            if info is not None and stat.S_ISREG(info.st_mode):
                self.fs.unlink(temp)
                log.info("removed a partial copy of a crashed run",
                         extra={**self._fields, "path": self._relative(temp)})
            os.unlink(entry.path)

    # the journal

    def _note(self, kind: str, rel: str, content: str = "") -> None:
        os.makedirs(self.journal, exist_ok=True)
        path = self.journal / f"{kind}-{_key(rel)}"
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640),
                  "w", encoding="utf-8") as marker:
            marker.write(content or rel)
            marker.flush()
            os.fsync(marker.fileno())

    def _read(self, kind: str, rel: str) -> str | None:
        try:
            with open(self.journal / f"{kind}-{_key(rel)}", encoding="utf-8") as marker:
                return marker.read()
        except FileNotFoundError:
            return None

    def _forget(self, kind: str, rel: str) -> None:
        try:
            os.unlink(self.journal / f"{kind}-{_key(rel)}")
        except FileNotFoundError:
            pass

    def _relative(self, path: str | Path) -> str:
        return os.path.relpath(path, self.root)

    # 3. clean

    def clean(self) -> None:
        """Remove the journal, then the staging and guest folders if only leftovers remain.

        Leftovers are folders emptied by the move, upload temporaries of uploads refused
        during the move, and links. A real file is never removed here; it is logged and kept.
        """
        for entry in _scandir_or_empty(self.journal):
            os.unlink(entry.path)
        for top in (self.staging, self.guest_dir):
            _prune(top, self._fields)


def _prune(top: Path, fields: dict[str, str]) -> None:
    info = _lstat(top)
    if info is None:
        return
    if not stat.S_ISDIR(info.st_mode):
        if stat.S_ISLNK(info.st_mode):
            os.unlink(top)
        return
    frames = [(top, os.scandir(top))]
    try:
        while frames:
            path, entries = frames[-1]
            entry = next(entries, None)
            if entry is None:
                entries.close()
                frames.pop()
                try:
                    os.rmdir(path)
                except FileNotFoundError:
                    pass
                except OSError:
                    log.warning("folder left in place: it still holds files",
                                extra={**fields, "path": str(path)})
                continue
            if entry.is_dir(follow_symlinks=False):
                frames.append((Path(entry.path), os.scandir(entry.path)))
            elif entry.is_symlink() or entry.name.startswith(UPLOAD_PREFIX):
                _unlink_quietly(Path(entry.path))
    finally:
        for _path, entries in frames:
            entries.close()


def _entries_below(top: Path, rel: str):
    """Every entry under ``top`` with its relative path, depth first, one open dir per level."""
    stack = [(rel, os.scandir(top))]
    try:
        while stack:
            prefix, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()[1].close()
                continue
            path = f"{prefix}/{entry.name}"
            yield entry, path
            if entry.is_dir(follow_symlinks=False):
                stack.append((path, os.scandir(entry.path)))
    finally:
        for _prefix, entries in stack:
            entries.close()


def _scandir_or_empty(path: Path):
    try:
        with os.scandir(path) as entries:
            yield from entries
    except (FileNotFoundError, NotADirectoryError):
        return


def _beside(path: str | Path, name: str) -> str:
    """The path of ``name`` in the same folder as ``path``."""
    return os.path.join(os.path.dirname(path), name)


def _lstat(path: str | Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) and not os.path.islink(b)
    except OSError:
        return False


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _key(rel: str) -> str:
    return hashlib.sha256(rel.encode("utf-8", "surrogateescape")).hexdigest()[:32]
