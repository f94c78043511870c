"""Where an owner's files live: the only place that turns ids and names into paths.

The layout is ``<root>/users/<uuid>/<area>`` and ``<root>/guests/<uuid>/<area>``. An owner id is
accepted only as a canonical lowercase UUID, so an id can never be a path (``../../etc``). A
relative path is a list of plain names: no ``..``, no separators or encoded separators, no
control characters, nothing the worker uses for its own temporary files. Existing components are
checked with ``lstat`` and a symbolic link anywhere on the way is refused, never followed.
"""

import os
import re
import stat
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import unquote

AREAS = ("uploads", "sandbox", "outputs")
Kind = Literal["user", "guest"]
FOLDERS: dict[str, str] = {"user": "users", "guest": "guests"}

OWNER_ID = re.compile(r"\A[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
# Names the service writes for itself (upload temporaries, copy temporaries, the move's
# staging folder); a client may not create or read them.
RESERVED_PREFIX = ".gm-"
STAGING_PREFIX = ".moving-"
MAX_NAME_BYTES = 255
MAX_PATH_CHARS = 1024
MAX_DEPTH = 32


class BadOwner(ValueError):
    """An owner id that is not a canonical UUID."""


class UnknownArea(ValueError):
    """Not one of ``AREAS``."""


class BadPath(ValueError):
    """A relative path or name that could leave its folder or is not a plain name."""


class LinkRefused(BadPath):
    """A symbolic link (or something else that is not a folder or file) is on the way."""


def owner_id(value: object) -> str:
    """The canonical string of an owner id; anything else is refused with ``BadOwner``."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str) and OWNER_ID.match(value):
        return value
    shown = repr(value)[:80]
    raise BadOwner(f"not a well-formed owner id: {shown}")


def area(value: str) -> str:
    if value not in AREAS:
        raise UnknownArea(f"no area {value[:40]!r}; areas are {', '.join(AREAS)}")
    return value


def owner_dir(root: Path, kind: Kind, owner: object) -> Path:
    return root / FOLDERS[kind] / owner_id(owner)


def area_dir(root: Path, kind: Kind, owner: object, name: str) -> Path:
    return owner_dir(root, kind, owner) / area(name)


def staging_dir(root: Path, migration_id: object) -> Path:
    """Where a guest's folder waits while it is moved; beside the guests, so one rename."""
    return root / FOLDERS["guest"] / f"{STAGING_PREFIX}{owner_id(migration_id)}"


def name(value: str | None) -> str:
    """One plain file or folder name, or ``BadPath`` saying what is wrong with it."""
    if not value:
        raise BadPath("empty name")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise BadPath(f"name longer than {MAX_NAME_BYTES} bytes")
    if value in (".", ".."):
        raise BadPath("'.' and '..' are not names")
    if "/" in value or "\\" in value:
        raise BadPath("a name may not contain '/' or '\\'")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise BadPath("a name may not contain control characters")
    if any(unicodedata.category(char) == "Cf" for char in value):
        # Right-to-left overrides and zero-width characters make "rtl\u202etxt.exe" read as
        # another name than the one stored.
        raise BadPath("a name may not contain invisible formatting characters")
    if value != value.strip():
        raise BadPath("a name may not start or end with white space")
    if value.startswith(RESERVED_PREFIX):
        raise BadPath(f"names starting with {RESERVED_PREFIX!r} are reserved")
    decoded = _percent_decoded(value)
    if decoded != value and (
        decoded in (".", "..")
        or any(char in "/\\" or unicodedata.category(char) == "Cc" for char in decoded)
    ):
        raise BadPath("a name may not hide separators, dots or control characters in %-codes")
    return value


def relative(value: str | None) -> tuple[str, ...]:
    """A relative path (``docs/notes.md``) as its names; empty for the area itself."""
    if value is None or value == "":
        return ()
    if len(value) > MAX_PATH_CHARS:
        raise BadPath(f"path longer than {MAX_PATH_CHARS} characters")
    if value.startswith("/") or value.startswith("\\"):
        raise BadPath("an absolute path is not allowed")
    parts = tuple(value.split("/"))
    if len(parts) > MAX_DEPTH:
        raise BadPath(f"path deeper than {MAX_DEPTH} folders")
    for part in parts:
        if part == "":
            raise BadPath("empty folder name in the path")
        name(part)
    return parts


def _percent_decoded(value: str) -> str:
    decoded = value
    for _ in range(3):
        again = unquote(decoded)
        if again == decoded:
            break
        decoded = again
    return decoded


def ensure_dir(base: Path, parts: tuple[str, ...] = ()) -> Path:
    """Make ``base / parts`` exist as real folders; a link or file on the way is refused.

    ``base`` is made with its parents (it lies under the root the operator set up); each of
    ``parts`` is made one at a time and checked with ``lstat``.
    """
    base.mkdir(parents=True, exist_ok=True)
    _must_be_dir(base)
    current = base
    for part in parts:
        current = current / part
        try:
            os.mkdir(current, 0o750)
        except FileExistsError:
            _must_be_dir(current)
    return current


def existing(base: Path, parts: tuple[str, ...]) -> os.stat_result:
    """``lstat`` of ``base / parts``; every folder on the way must be a real folder.

    Raises FileNotFoundError when something is missing and LinkRefused for a link on the way.
    """
    current = base
    info = os.lstat(current)
    if not stat.S_ISDIR(info.st_mode):
        raise LinkRefused("the area is not a folder")
    for index, part in enumerate(parts):
        current = current / part
        info = os.lstat(current)
        last = index == len(parts) - 1
        if stat.S_ISLNK(info.st_mode):
            raise LinkRefused(f"{'/'.join(parts[: index + 1])} is a symbolic link")
        if not last and not stat.S_ISDIR(info.st_mode):
            raise FileNotFoundError(current)
    return info


def walk_files(base: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Every regular file under ``base`` as (relative path, lstat), links and temporaries left out.

    Iterative with one open directory per level, so memory follows the depth, not the size.
    """
    try:
        stack = [("", os.scandir(base))]
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        while stack:
            prefix, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                entries.close()
                stack.pop()
                continue
            if entry.name.startswith(RESERVED_PREFIX):
                continue
            path = f"{prefix}{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                stack.append((f"{path}/", os.scandir(entry.path)))
            elif entry.is_file(follow_symlinks=False):
                yield path, entry.stat(follow_symlinks=False)
    finally:
        for _prefix, entries in stack:
            entries.close()


def _must_be_dir(path: Path) -> None:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise LinkRefused(f"{path.name} is a symbolic link")
    if not stat.S_ISDIR(info.st_mode):
        raise NotADirectoryError(path)
