"""The sandbox's one map from owners and names to folders refuses anything that is a path."""

import os
import uuid

import pytest

from services.sandbox import paths

GOOD_ID = "1a2b3c4d-0000-4000-8000-00000000abcd"
BAD_IDS = [
    "../../etc", "..", "a/b", "/abs", "%2e%2e%2f", f"{GOOD_ID} ", "", "x" * 10_000,
    GOOD_ID.upper(), f"{{{GOOD_ID}}}", GOOD_ID.replace("-", ""), f"{GOOD_ID}\n", None, 42,
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=range(len(BAD_IDS)))
def test_an_owner_id_that_is_not_a_canonical_uuid_is_refused(bad, tmp_path):
    with pytest.raises(paths.BadOwner):
        paths.owner_dir(tmp_path, "guest", bad)


def test_a_canonical_owner_id_maps_to_its_folder_under_the_root(tmp_path):
    assert paths.area_dir(tmp_path, "user", uuid.UUID(GOOD_ID), "uploads") == (
        tmp_path / "users" / GOOD_ID / "uploads"
    )
    assert paths.owner_dir(tmp_path, "guest", GOOD_ID) == tmp_path / "guests" / GOOD_ID


def test_only_the_three_areas_exist():
    for name in paths.AREAS:
        assert paths.area(name) == name
    for name in ("Uploads", "..", "", "uploads/x", "tmp"):
        with pytest.raises(paths.UnknownArea):
            paths.area(name)


BAD_PATHS = [
    "..", "../x", "a/../b", "/etc/passwd", "a//b", "a/", "a\\b", "a\0b", "a\x01b", "a\x7fb",
    "%2e%2e%2f", "a%2Fb", "a%5cb", "%252e%252e", "x" * 256, "/".join(["a"] * 40), " a", "a ",
    ".gm-upload-123", "a/./b",
]


@pytest.mark.parametrize("bad", BAD_PATHS, ids=range(len(BAD_PATHS)))
def test_a_relative_path_that_could_leave_its_folder_is_refused(bad):
    with pytest.raises(paths.BadPath):
        paths.relative(bad)


def test_plain_relative_paths_are_split_into_names():
    assert paths.relative("docs/notes.md") == ("docs", "notes.md")
    assert paths.relative("") == ()
    assert paths.relative("100% done.txt") == ("100% done.txt",)
    assert paths.relative("naïve résumé.pdf") == ("naïve résumé.pdf",)


@pytest.mark.parametrize("bad", ["", None, "a/b", "..", "tab\there", "new\nline"])
def test_a_file_name_must_be_one_plain_name(bad):
    with pytest.raises(paths.BadPath):
        paths.name(bad)


def test_a_symbolic_link_on_the_way_is_refused_not_followed(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    area = tmp_path / "root" / "users" / GOOD_ID / "uploads"
    area.mkdir(parents=True)
    os.symlink(outside, area / "docs")
    with pytest.raises(paths.LinkRefused):
        paths.ensure_dir(area, ("docs", "deeper"))
    with pytest.raises(paths.LinkRefused):
        paths.existing(area, ("docs", "x"))
    assert list(outside.iterdir()) == []


def test_the_file_walk_leaves_out_links_and_service_temporaries(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("a")
    (tmp_path / "b.txt").write_text("bb")
    (tmp_path / ".gm-upload-1").write_text("partial")
    os.symlink("/etc/passwd", tmp_path / "passwd")
    assert sorted(rel for rel, _info in paths.walk_files(tmp_path)) == ["b.txt", "docs/a.md"]


@pytest.mark.parametrize("bad", ["rtl\u202etxt.exe", "zero\u200bwidth.txt", "bom\ufeff.txt",
                                 "iso\u2066late.txt"])
def test_a_name_with_invisible_formatting_characters_is_refused(bad):
    with pytest.raises(paths.BadPath, match="invisible"):
        paths.name(bad)
