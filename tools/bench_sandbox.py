"""How fast the sandbox move is, and whether its memory grows with the tree.

``python -m tools.bench_sandbox``. Builds guest trees under ``var/`` (the sandbox's own
filesystem), moves them with the worker's ``Move`` (stage, count, move, clean: the filesystem
part of the handler, without the two short database transactions around it), and prints a
table. Two shapes: a user with no folders yet (each area is one rename) and a user whose
folders already exist (every file is merged one by one: the worst case on one filesystem).
The 1 GB trees use sparse files (``truncate``), which a rename treats exactly like full ones.
"""

import shutil
import subprocess
import sys
import time
import tracemalloc
import uuid
from pathlib import Path

from services.sandbox.sandbox_move import Move
from shared.settings import PROJECT_ROOT

MEMORY_SIZES = (1_000, 10_000, 50_000)
GIB = 1024**3


def build(root: Path, guest: str, files: int, total_bytes: int, sparse: bool) -> None:
    per_file = total_bytes // files
    base = root / "guests" / guest
    for n in range(files):
        folder = base / ("uploads", "sandbox", "outputs")[n % 3] / f"d{n % 100:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"file-{n:05d}.bin"
        if sparse:
            with open(path, "wb") as handle:
                handle.truncate(per_file)
        else:
            path.write_bytes(b"x" * per_file)


def prepare_user(root: Path, user: str, merge: bool) -> None:
    if merge:
        for area in ("uploads", "sandbox", "outputs"):
            for d in range(100):
                (root / "users" / user / area / f"d{d:03d}").mkdir(parents=True, exist_ok=True)


def move_once(root: Path, files: int, total: int, sparse: bool, merge: bool,
              trace: bool) -> tuple[float, int, int]:
    guest, user = str(uuid.uuid4()), str(uuid.uuid4())
    build(root, guest, files, total, sparse)
    prepare_user(root, user, merge)
    move = Move(root, guest, user, str(uuid.uuid4()))
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    move.stage()
    plan = move.plan()
    move.run()
    move.clean()
    elapsed = time.perf_counter() - started
    peak = 0
    if trace:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert plan.files == files, plan
    shutil.rmtree(root / "users" / user)
    return elapsed, peak, plan.bytes


def main() -> None:
    root = PROJECT_ROOT / "var" / f"bench-sandbox-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    rows = []
    try:
        for label, files, total, sparse in (
            ("10k sparse, 1 GB", 10_000, GIB, True),
            ("10k real, 40 MB", 10_000, 40 * 1024 * 1024, False),
            ("1k sparse, 100 MB", 1_000, GIB // 10, True),
        ):
            for merge in (False, True):
                elapsed, _peak, size = move_once(root, files, total, sparse, merge, trace=False)
                _elapsed, peak, _size = move_once(root, files, total, sparse, merge, trace=True)
                rows.append((label, "merge" if merge else "rename", files, size, elapsed, peak))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    out("sandbox move, filesystem part (stage, count, move, clean); database not included")
    out("1 GB trees are sparse files made with truncate; the 40 MB tree is real bytes")
    out(f"{'tree':<20} {'user has':<8} {'files':>6} {'bytes':>13} {'seconds':>8} "
        f"{'peak KiB':>9}")
    for label, shape, files, size, elapsed, peak in rows:
        shown = "folders" if shape == "merge" else "nothing"
        out(f"{label:<20} {shown:<8} {files:>6} {size:>13} {elapsed:>8.3f} {peak / 1024:>9.1f}")
    worst = max(row[4] for row in rows if row[2] == 10_000)
    out(f"10k files under 1 s in every shape: {'yes' if worst < 1.0 else 'no'} "
        f"(slowest {worst:.3f} s)")
    out("peak Python memory of a move, each size in a fresh process (tracemalloc, merge):")
    for files in MEMORY_SIZES:
        peak = int(subprocess.run(
            [sys.executable, "-m", "tools.bench_sandbox", "--memory", str(files)],
            cwd=PROJECT_ROOT, capture_output=True, text=True, check=True).stdout)
        out(f"  {files:>6} files: {peak / 1024:>8.1f} KiB")


def memory_of_one_move(files: int) -> int:
    """Peak bytes traced while moving ``files`` small files into existing folders."""
    root = PROJECT_ROOT / "var" / f"bench-sandbox-{uuid.uuid4().hex[:8]}"
    root.mkdir(parents=True)
    try:
        return move_once(root, files, files * 64, True, True, trace=True)[1]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def out(line: str) -> None:
    sys.stdout.write(line + "\n")

if __name__ == "__main__":
    if sys.argv[1:2] == ["--memory"]:
        out(str(memory_of_one_move(int(sys.argv[2]))))
    else:
        main()
