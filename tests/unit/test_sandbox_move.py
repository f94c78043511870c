"""The move on real folders, with a filesystem that fails on the Nth operation, then a rerun.

``FailingFilesystem`` is the test side of the move's seam: it stops (as a crash would) on the
Nth call of one operation, can pretend the guests and the users live on two filesystems (EXDEV
on every rename between them), and can cut a copy off half way.
"""

import errno
import os
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.sandbox import paths
from services.sandbox.filesystem import Filesystem
from services.sandbox.sandbox_move import Move, Plan, guest_name


class Crash(Exception):
    """Stands for the worker dying at this point."""


class FailingFilesystem(Filesystem):
    def __init__(self, fail: dict[str, int] | None = None, devices: tuple[Path, ...] = (),
                 use_renameat2: bool = True) -> None:
        super().__init__(use_renameat2)
        self.fail = fail or {}
        self.devices = devices
        self.calls: Counter[str] = Counter()

    def _step(self, operation: str) -> None:
        self.calls[operation] += 1
        if self.fail.get(operation) == self.calls[operation]:
            raise Crash(f"{operation} #{self.calls[operation]}")

    def _device(self, path: Path) -> int:
        return next((i for i, top in enumerate(self.devices)
                     if Path(path).is_relative_to(top)), -1)

    def _across(self, source: Path, target: Path) -> None:
        if self._device(source) != self._device(target):
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(source))

    def rename(self, source: Path, target: Path) -> None:
        self._step("rename")
        self._across(source, target)
        super().rename(source, target)

    def link(self, source: Path, target: Path) -> None:
        self._step("link")
        self._across(source, target)
        super().link(source, target)

    def unlink(self, path: Path) -> None:
        self._step("unlink")
        super().unlink(path)

    def mkdir(self, path: Path) -> None:
        self._step("mkdir")
        super().mkdir(path)

    def rmdir(self, path: Path) -> None:
        self._step("rmdir")
        super().rmdir(path)

    def copy(self, source: Path, target: Path) -> str:
        self.calls["copy"] += 1
        if self.fail.get("copy") == self.calls["copy"]:
            data = Path(source).read_bytes()
            Path(target).write_bytes(data[: len(data) // 2])
            raise Crash(f"copy #{self.calls['copy']} cut off half way")
        return super().copy(source, target)


def cross_device(root: Path, fail: dict[str, int] | None = None) -> FailingFilesystem:
    return FailingFilesystem(fail, devices=(root / "guests", root / "users"))


@dataclass
class Ids:
    guest: str
    user: str
    migration: str

    @classmethod
    def new(cls) -> "Ids":
        return cls(str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4()))


def write(base: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)


def tree(base: Path) -> dict[str, str]:
    return {rel: (base / rel).read_text() for rel, _ in paths.walk_files(base)} | {
        f"{rel}/": "" for rel in _dirs(base)
    }


def _dirs(base: Path) -> list[str]:
    if not base.exists():
        return []
    return [p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_dir()]


USER = {"uploads/a.txt": "USER A", "outputs/report.csv": "USER"}
GUEST = {
    "uploads/b.txt": "GUEST B",
    "uploads/docs/notes.md": "GUEST NOTES",
    "uploads/docs/deep/x.bin": "X" * 5000,
    "outputs/report.csv": "GUEST",
    "sandbox/run/out.log": "LOG",
}


def expected_user_tree(ids: Ids) -> dict[str, str]:
    renamed = f"outputs/report (from guest {ids.guest[:8]}).csv"
    files = {**USER, **{k: v for k, v in GUEST.items() if k != "outputs/report.csv"},
             renamed: "GUEST"}
    folders = {"uploads/", "outputs/", "sandbox/", "uploads/docs/", "uploads/docs/deep/",
               "sandbox/run/"}
    return files | {folder.rstrip("/") + "/": "" for folder in folders}


def prepare(root: Path, ids: Ids) -> None:
    write(root / "users" / ids.user, USER)
    write(root / "guests" / ids.guest, GUEST)


def drive(root: Path, ids: Ids, fs: Filesystem, state: dict) -> None:
    """What the worker does, with ``state`` standing for the database row between runs."""
    move = Move(root, ids.guest, ids.user, ids.migration, fs)
    if "plan" not in state:
        move.stage()
        state["plan"] = move.plan()
    if not state.get("done"):
        state["renamed"] = move.run()
        state["done"] = True
    move.clean()


def assert_moved(root: Path, ids: Ids, state: dict) -> None:
    user = root / "users" / ids.user
    expected = {rel[:-1] if rel.endswith("/") else rel: v
                for rel, v in expected_user_tree(ids).items()}
    found = {rel[:-1] if rel.endswith("/") else rel: v for rel, v in tree(user).items()}
    assert found == expected
    assert not any(p.name.startswith(".gm-") for p in user.rglob("*"))
    assert sorted(os.listdir(root / "guests")) == []
    assert state["plan"] == Plan(["uploads", "sandbox", "outputs"], files=5, folders=3,
                                 bytes=sum(len(v) for v in GUEST.values()), links_skipped=0)
    assert state["renamed"] == 1


def test_c01_a_move_merges_folders_without_nesting_and_never_replaces_a_user_file(tmp_path):
    ids = Ids.new()
    prepare(tmp_path, ids)
    state: dict = {}
    drive(tmp_path, ids, Filesystem(), state)
    assert_moved(tmp_path, ids, state)
    user = tmp_path / "users" / ids.user
    assert not (user / "uploads" / "uploads").exists()
    assert not (user / "uploads" / "docs" / "docs").exists()
    assert (user / "outputs" / "report.csv").read_text() == "USER"

    drive(tmp_path, ids, Filesystem(), state)
    assert_moved(tmp_path, ids, state)


def _operations_of_a_clean_run(tmp_path: Path, make_fs) -> Counter:
    ids = Ids.new()
    base = tmp_path / "probe"
    prepare(base, ids)
    fs = make_fs(base, None)
    drive(base, ids, fs, {})
    return fs.calls


def _crash_then_rerun(tmp_path: Path, make_fs, rerun_fs) -> int:
    crashes = 0
    for operation, count in _operations_of_a_clean_run(tmp_path, make_fs).items():
        for n in range(1, count + 1):
            root = tmp_path / f"{operation}-{n}"
            ids = Ids.new()
            prepare(root, ids)
            state: dict = {}
            with pytest.raises(Crash):
                drive(root, ids, make_fs(root, {operation: n}), state)
            crashes += 1
            drive(root, ids, rerun_fs(root), state)
            assert_moved(root, ids, state)
    return crashes


def test_a_crash_at_every_operation_of_a_move_is_completed_by_a_rerun(tmp_path):
    crashes = _crash_then_rerun(
        tmp_path, lambda root, fail: FailingFilesystem(fail), lambda root: Filesystem())
    assert crashes > 8


def test_a_crash_between_link_and_unlink_leaves_no_duplicate_after_the_rerun(tmp_path):
    def make(root, fail):
        return FailingFilesystem(fail, use_renameat2=False)

    crashes = _crash_then_rerun(tmp_path, make, lambda root: Filesystem(use_renameat2=False))
    assert crashes > 8


def test_c02_a_move_across_filesystems_copies_checks_and_resumes_after_every_crash(tmp_path):
    crashes = _crash_then_rerun(tmp_path, cross_device, cross_device)
    assert crashes > 8


def test_c02_a_copy_cut_off_half_way_leaves_no_half_file_and_the_rerun_completes(tmp_path):
    ids = Ids.new()
    prepare(tmp_path, ids)
    state: dict = {}
    with pytest.raises(Crash):
        drive(tmp_path, ids, cross_device(tmp_path, {"copy": 2}), state)
    user = tmp_path / "users" / ids.user
    for rel, content in tree(user).items():
        if not rel.endswith("/") and not rel.split("/")[-1].startswith(".gm-"):
            assert content in {*USER.values(), *GUEST.values()}
    drive(tmp_path, ids, Filesystem(), state)
    assert_moved(tmp_path, ids, state)


def test_symbolic_links_in_the_guest_tree_are_neither_followed_nor_carried_across(tmp_path):
    ids = Ids.new()
    outside = tmp_path / "outside"
    write(outside, {"secret.txt": "SECRET"})
    guest = tmp_path / "root" / "guests" / ids.guest
    write(guest, {"uploads/ok.txt": "OK"})
    os.symlink(outside, guest / "uploads" / "escape")
    os.symlink(outside / "secret.txt", guest / "uploads" / "secret.txt")
    os.symlink(outside, guest / "outputs")
    state: dict = {}
    drive(tmp_path / "root", ids, Filesystem(), state)
    user = tmp_path / "root" / "users" / ids.user
    assert tree(user) == {"uploads/ok.txt": "OK", "uploads/": ""}
    assert not any(p.is_symlink() for p in user.rglob("*"))
    assert state["plan"].links_skipped == 3
    assert tree(outside) == {"secret.txt": "SECRET"}


def test_a_guest_folder_meeting_a_user_file_of_its_name_is_renamed_beside_it(tmp_path):
    ids = Ids.new()
    write(tmp_path / "users" / ids.user, {"uploads/docs": "A FILE"})
    write(tmp_path / "guests" / ids.guest, {"uploads/docs/n.md": "N"})
    state: dict = {}
    drive(tmp_path, ids, Filesystem(), state)
    user = tmp_path / "users" / ids.user / "uploads"
    assert (user / "docs").read_text() == "A FILE"
    assert (user / f"docs (from guest {ids.guest[:8]})" / "n.md").read_text() == "N"
    assert state["renamed"] == 1


def test_two_guests_moved_into_one_user_give_the_union_with_distinct_names(tmp_path):
    user = str(uuid.uuid4())
    first, second = Ids(str(uuid.uuid4()), user, str(uuid.uuid4())), Ids(
        str(uuid.uuid4()), user, str(uuid.uuid4()))
    write(tmp_path / "users" / user, {"uploads/r.csv": "USER"})
    for ids in (first, second):
        write(tmp_path / "guests" / ids.guest, {"uploads/r.csv": ids.guest,
                                                 f"uploads/{ids.guest}.txt": "own"})
        drive(tmp_path, ids, Filesystem(), {})
    files = tree(tmp_path / "users" / user)
    assert files["uploads/r.csv"] == "USER"
    for ids in (first, second):
        assert files[f"uploads/r (from guest {ids.guest[:8]}).csv"] == ids.guest
        assert files[f"uploads/{ids.guest}.txt"] == "own"
    assert len(files) == 6


def test_renamed_names_are_predictable_and_fit_a_file_name():
    assert guest_name("report.csv", "1a2b3c4d", 1) == "report (from guest 1a2b3c4d).csv"
    assert guest_name("report.csv", "1a2b3c4d", 2) == "report (from guest 1a2b3c4d 2).csv"
    assert guest_name(".env", "1a2b3c4d", 1) == ".env (from guest 1a2b3c4d)"
    assert len(guest_name("x" * 255, "1a2b3c4d", 3).encode()) <= 255


def test_a_move_refuses_owner_ids_that_are_paths(tmp_path):
    for bad in ("../../etc", "..", "a/b", "/abs", ""):
        with pytest.raises(paths.BadOwner):
            Move(tmp_path, bad, str(uuid.uuid4()), str(uuid.uuid4()))
    assert list(tmp_path.iterdir()) == []
