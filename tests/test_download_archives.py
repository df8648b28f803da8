"""Archives extract nothing outside their target: links through links, chained links and the
CVE-2025-4517 pattern (crafted here), on a Python whose tarfile lacks the 2025 fixes."""
from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest

from elimnet.data.download import extract_tar
from elimnet.errors import DataError


def _file(name: str, data: bytes = b"new") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _link(name: str, to: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, to
    return info, None


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def _archive(path: Path, members) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def cve_2025_4517_members(victim: str) -> list:
    """Deep real folders with long names, each reachable through a one-letter symlink: the lexical path is
    short, the resolved one longer than PATH_MAX, where realpath stops resolving and tarfile's 3.11.7 "data"
    filter takes the unresolved text as the truth. The last links then point out of the target."""
    comp, steps = "d" * 247, "abcdefghijklmnop"
    members, path = [], ""
    for step in steps:
        members += [_dir(f"{path}{comp}"), _link(f"{path}{step}", comp)]
        path += comp + "/"
    deep = "/".join(steps) + "/" + "l" * 254
    members += [_link(deep, "../" * len(steps)),  # back up to the target itself, through 16 links
                _link("escape", deep + "/.."),  # ...and one more: the target's parent
                _file(f"escape/{victim}", b"overwritten")]
    return members


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "victim.txt"
    path.write_bytes(b"original")
    return path


def _outside_unchanged(tmp_path: Path, victim: Path, target: Path) -> None:
    assert victim.read_bytes() == b"original"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["victim.txt", target.name, "a.tar"])


def test_cve_2025_4517_pattern_extracts_nothing(tmp_path, victim):
    target = tmp_path / "out"
    target.mkdir()
    archive = _archive(tmp_path / "a.tar", cve_2025_4517_members(victim.name))
    with pytest.raises(DataError) as e:
        extract_tar(archive, target)
    msg = str(e.value)
    assert "\n" not in msg and "goes through the link 'a'" in msg and "(2 of 35 entries refused)" in msg
    assert list(target.iterdir()) == []  # refused before the first member was written
    _outside_unchanged(tmp_path, victim, target)


@pytest.mark.skipif(sys.version_info >= (3, 12) or sys.version_info[:3] >= (3, 11, 13),
                    reason="this tarfile has the 2025 fixes")
def test_the_pattern_gets_past_tarfiles_own_data_filter_here(tmp_path, victim):
    """Why elimnet checks members itself: on this interpreter, `filter="data"` alone overwrites the victim."""
    target = tmp_path / "out"
    target.mkdir()
    archive = _archive(tmp_path / "a.tar", cve_2025_4517_members(victim.name))
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    assert victim.read_bytes() == b"overwritten"


@pytest.mark.parametrize("members, first", [
    # a/b -> .. stays inside (it is the target), but x -> a/b/.. resolves through it to the target's parent
    ([_dir("a"), _link("a/b", ".."), _link("x", "a/b/.."), _file("x/victim.txt")], "'x (link)' -> 'a/b/..'"),
    # the same with a hard link: its target is named through the symlink
    ([_dir("a"), _link("a/b", ".."), _link("h", "a/b/../victim.txt", tarfile.LNKTYPE)], "'h (link)'"),
    # a file written through a link, even one pointing inside
    ([_dir("a"), _link("a/b", ".."), _file("a/b/victim.txt")], "'a/b/victim.txt' goes through the link 'a/b'"),
    # a second member with a link's name would write through it
    ([_link("v", "../victim.txt"), _file("v")], "'v (link)' -> '../victim.txt' points to a path that leaves"),
])
def test_chained_links_extract_nothing_outside(tmp_path, victim, members, first):
    target = tmp_path / "out"
    target.mkdir()
    archive = _archive(tmp_path / "a.tar", members)
    with pytest.raises(DataError) as e:
        extract_tar(archive, target)
    assert "\n" not in str(e.value) and f"entry {first}" in str(e.value), str(e.value)
    assert list(target.iterdir()) == []
    _outside_unchanged(tmp_path, victim, target)


def test_a_link_already_on_disk_is_not_followed(tmp_path, victim):
    """The second check runs against the disk: a symlink in the target (not from this archive) is refused."""
    target = tmp_path / "out"
    target.mkdir()
    (target / "pre").symlink_to(tmp_path)
    archive = _archive(tmp_path / "a.tar", [_file("ok.txt"), _file("pre/victim.txt")])
    with pytest.raises(DataError, match=r"entry 'pre/victim.txt' goes through the link 'pre' \(1 of 2"):
        extract_tar(archive, target)
    _outside_unchanged(tmp_path, victim, target)


def test_links_that_stay_inside_extract(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    archive = _archive(tmp_path / "a.tar", [_dir("v1"), _file("v1/data.txt", b"payload"), _link("latest", "v1"),
                                            _link("v1/alias.txt", "data.txt"),
                                            _link("copy.txt", "v1/data.txt", tarfile.LNKTYPE)])
    extract_tar(archive, target)
    assert (target / "latest" / "data.txt").read_bytes() == b"payload"
    assert (target / "v1" / "alias.txt").read_bytes() == b"payload"
    assert (target / "copy.txt").read_bytes() == b"payload" and not (target / "copy.txt").is_symlink()
