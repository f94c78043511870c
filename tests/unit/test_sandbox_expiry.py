"""Removing an expired guest's folder on real folders: all of it, once, and nothing beyond it."""

import os
import uuid

import pytest

from services.sandbox import paths
from services.sandbox.expiry import Removal, remove_guest_folder
from tests.unit.test_sandbox_move import GUEST, tree, write


def test_the_guest_folder_goes_whole_with_its_files_counted_and_a_rerun_removes_nothing(
    tmp_path
):
    guest, neighbour = str(uuid.uuid4()), str(uuid.uuid4())
    write(tmp_path / "guests" / guest, GUEST)
    write(tmp_path / "guests" / neighbour, {"uploads/keep.txt": "mine"})
    write(tmp_path / "users" / guest, {"uploads/same-id.txt": "a user's"})

    removal = remove_guest_folder(tmp_path, guest)

    # Folders: the guest's own and the six below it.
    assert removal == Removal(files=5, folders=7, links=0,
                              bytes=sum(len(v) for v in GUEST.values()))
    assert not (tmp_path / "guests" / guest).exists()
    assert tree(tmp_path / "guests" / neighbour)["uploads/keep.txt"] == "mine"
    assert tree(tmp_path / "users" / guest)["uploads/same-id.txt"] == "a user's"
    assert remove_guest_folder(tmp_path, guest) == Removal()


def test_links_inside_are_removed_as_links_and_their_targets_outside_are_untouched(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(outside, {"secret.txt": "keep", "dir/inner.txt": "keep too"})
    guest = str(uuid.uuid4())
    write(root / "guests" / guest, {"uploads/own.txt": "x"})
    os.symlink(outside / "secret.txt", root / "guests" / guest / "uploads" / "to-file")
    os.symlink(outside / "dir", root / "guests" / guest / "uploads" / "to-dir")
    os.symlink(outside, root / "guests" / guest / "sandbox")

    removal = remove_guest_folder(root, guest)

    assert (removal.files, removal.links) == (1, 3)
    assert not (root / "guests" / guest).exists()
    assert tree(outside) == {"secret.txt": "keep", "dir/inner.txt": "keep too", "dir/": ""}


def test_a_guest_folder_that_is_itself_a_link_is_unlinked_not_followed(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    write(outside, {"uploads/secret.txt": "keep"})
    guest = str(uuid.uuid4())
    (root / "guests").mkdir(parents=True)
    os.symlink(outside, root / "guests" / guest)

    assert remove_guest_folder(root, guest) == Removal(links=1)

    assert not os.path.lexists(root / "guests" / guest)
    assert tree(outside)["uploads/secret.txt"] == "keep"


def test_a_guests_folder_that_is_a_link_is_refused(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    guest = str(uuid.uuid4())
    write(outside / guest, {"uploads/secret.txt": "keep"})
    root.mkdir()
    os.symlink(outside, root / "guests")

    with pytest.raises(paths.LinkRefused):
        remove_guest_folder(root, guest)

    assert tree(outside / guest)["uploads/secret.txt"] == "keep"


@pytest.mark.parametrize("bad", ["../../etc", "..", "", "a/b", str(uuid.uuid4()).upper(),
                                 ".moving-" + str(uuid.uuid4())])
def test_an_id_that_is_not_a_canonical_uuid_is_refused_and_touches_nothing(tmp_path, bad):
    write(tmp_path / "guests" / "x", {"f.txt": "keep"})
    with pytest.raises(paths.BadOwner):
        remove_guest_folder(tmp_path / "guests" / "x", bad)
    assert tree(tmp_path / "guests" / "x")["f.txt"] == "keep"


def test_nothing_to_remove_when_there_is_no_guests_folder_yet(tmp_path):
    assert remove_guest_folder(tmp_path / "empty", uuid.uuid4()) == Removal()
