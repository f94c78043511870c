"""Removing the folder of a guest auth removed unclaimed (``GuestExpired``).

Only ``<root>/guests/<guest id>`` is removed, and nothing is ever reached through a symbolic
link: the guest id must be a canonical UUID (``paths.owner_id``); every folder is opened
relative to its parent's descriptor with ``O_NOFOLLOW``, so a folder swapped for a link while
the walk runs is refused instead of followed; links, like files, are unlinked by name; the
guest folder itself, if it is a link, is removed as a link. Memory follows the depth of the
tree, not its size (one open folder per level). Running it again finds nothing and removes
nothing.
"""

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from services.sandbox import paths

_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


@dataclass
class Removal:
    """What a removal took away, counted as it goes."""

    files: int = 0
    folders: int = 0
    links: int = 0
    bytes: int = 0

    def unlinked(self, info: os.stat_result) -> None:
        if stat.S_ISREG(info.st_mode):
            self.files += 1
            self.bytes += info.st_size
        else:
            self.links += 1  # links and any other special file, never followed


def remove_guest_folder(root: Path, guest_id: object) -> Removal:
    """Remove the guest's folder and everything in it; ``BadOwner`` for a malformed id."""
    guest = paths.owner_id(guest_id)
    try:
        guests = os.open(root / paths.FOLDERS["guest"], _OPEN_DIR)
    except FileNotFoundError:
        return Removal()
    except OSError as exc:
        raise paths.LinkRefused(f"{root / paths.FOLDERS['guest']} is not a real folder: "
                                f"{exc.strerror}") from exc
    tally = Removal()
    try:
        try:
            info = os.stat(guest, dir_fd=guests, follow_symlinks=False)
        except FileNotFoundError:
            return Removal()
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(guest, dir_fd=guests)
            tally.unlinked(info)
            return tally
        _empty(os.open(guest, _OPEN_DIR, dir_fd=guests), tally)
        os.rmdir(guest, dir_fd=guests)
        tally.folders += 1
    finally:
        os.close(guests)
    return tally


def _empty(top: int, tally: Removal) -> None:
    """Remove everything inside the open folder ``top`` (closed on return), depth first."""
    # Each frame: the folder's descriptor, its name in the parent, and its listing.
    frames = [(top, "", _listing(top))]
    try:
        while frames:
            fd, name, entries = frames[-1]
            entry = next(entries, None)
            if entry is None:
                entries.close()
                os.close(fd)
                frames.pop()
                if frames:
                    os.rmdir(name, dir_fd=frames[-1][0])
                    tally.folders += 1
                continue
            try:
                info = os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                child = os.open(entry.name, _OPEN_DIR, dir_fd=fd)
                frames.append((child, entry.name, _listing(child)))
            else:
                os.unlink(entry.name, dir_fd=fd)
                tally.unlinked(info)
    finally:
        for fd, _name, entries in frames:
            entries.close()
            os.close(fd)


def _listing(fd: int):
    """The entries of an open folder; the descriptor is closed if it cannot be listed."""
    try:
        return os.scandir(fd)
    except OSError:
        os.close(fd)
        raise
