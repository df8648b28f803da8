"""Downloads that end, verify what they can, and never write outside their folder (loopback server)."""
from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest
from conftest import FIXED_SPLIT
from test_sources import TACO_MAPPING, cfg_for, mini_taco  # noqa: F401 - a fixture

import elimnet.data.download as download_mod
from elimnet.data import imagenette, taco
from elimnet.data.download import DownloadError, download, part_path, record_unverified, refuse_escapes
from elimnet.errors import DataError

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(download_mod.time, "sleep", lambda s: None)


# ----------------------------------------------------------------------------- complete .part
def test_complete_part_with_checksum_is_finalised_without_a_request(http_server, tmp_path):
    http_server.files["/w.bin"] = PAYLOAD
    url = http_server.url("/w.bin")
    part_path(tmp_path / "w.bin", url).write_bytes(PAYLOAD)
    dest = download(url, tmp_path / "w.bin", sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD and http_server.requests == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin"]


def test_complete_part_without_checksum_is_finalised_on_416(http_server, tmp_path, monkeypatch):
    """Killed between the last byte and the rename: the resume asks for bytes past the end (If-Range: the
    ETag it streamed under); the 416's total equals the .part's size: done, no loop, still unverified."""
    http_server.files["/w.bin"] = PAYLOAD
    url, dest = http_server.url("/w.bin"), tmp_path / "w.bin"
    real_replace = download_mod.os.replace

    def killed(src, dst):
        monkeypatch.setattr(download_mod.os, "replace", real_replace)
        raise KeyboardInterrupt

    monkeypatch.setattr(download_mod.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        download(url, dest, progress=False)
    assert part_path(dest, url).stat().st_size == len(PAYLOAD) and not dest.exists()
    with record_unverified() as unverified:
        assert download(url, dest, progress=False).read_bytes() == PAYLOAD
    assert [h.get("Range") for _, h in http_server.requests] == [None, f"bytes={len(PAYLOAD)}-"]
    assert http_server.requests[1][1]["If-Range"].startswith('"')
    assert unverified == {str(dest)}  # complete, but no pinned hash says these are the right bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.bin", "w.bin.unverified"]


def test_part_longer_than_the_file_starts_over(http_server, tmp_path):
    http_server.files["/w.bin"] = PAYLOAD
    url = http_server.url("/w.bin")
    part = part_path(tmp_path / "w.bin", url)
    part.write_bytes(PAYLOAD + b"stale tail")
    download_mod._save_validator(part, url, {"ETag": '"' + SHA[:16] + '"'})
    dest = download(url, tmp_path / "w.bin", sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [h.get("Range") for _, h in http_server.requests] == [f"bytes={len(PAYLOAD) + 10}-", None]


# ----------------------------------------------------------------------------- deadline, short body
def test_slow_drip_hits_the_total_deadline_and_keeps_the_part(http_server, tmp_path):
    """256 bytes every 50 ms never trips a per-read timeout (100 KB would take 20 s); the deadline does."""
    http_server.files["/w.bin"] = PAYLOAD
    http_server.drip["/w.bin"] = 0.05
    with pytest.raises(DownloadError) as e:
        download(http_server.url("/w.bin"), tmp_path / "w.bin", sha256=SHA, deadline_s=0.5, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "not complete after 0.5 s (data.download_timeout_s)" in msg
    assert not (tmp_path / "w.bin").exists()
    assert 0 < part_path(tmp_path / "w.bin", http_server.url("/w.bin")).stat().st_size < len(PAYLOAD)  # kept
    http_server.drip.clear()
    assert download(http_server.url("/w.bin"), tmp_path / "w.bin", sha256=SHA, progress=False).read_bytes() == PAYLOAD
    assert http_server.requests[-1][1].get("Range", "").startswith("bytes=")


def test_body_shorter_than_declared_is_an_error(http_server, tmp_path):
    http_server.files["/w.bin"] = PAYLOAD
    http_server.cut_after["/w.bin"] = 1000
    with pytest.raises(DownloadError, match=f"connection closed after 1000 of {len(PAYLOAD)} bytes"):
        download(http_server.url("/w.bin"), tmp_path / "w.bin", retries=0, progress=False)
    assert not (tmp_path / "w.bin").exists()


# ----------------------------------------------------------------------------- unverified
def test_every_file_without_a_pinned_hash_is_recorded_unverified(http_server, tmp_path):
    """A length proves the byte count, not the bytes: only a pinned hash verifies."""
    http_server.files["/a.bin"] = PAYLOAD
    http_server.files["/b.bin"] = PAYLOAD
    http_server.files["/c.bin"] = PAYLOAD
    http_server.no_length |= {"/a.bin", "/b.bin"}
    with record_unverified() as unverified:
        a = download(http_server.url("/a.bin"), tmp_path / "a.bin", progress=False)  # nothing to check
        download(http_server.url("/b.bin"), tmp_path / "b.bin", sha256=SHA, progress=False)  # hash checked
        download(http_server.url("/c.bin"), tmp_path / "c.bin", progress=False)  # length only
    assert a.read_bytes() == PAYLOAD
    assert unverified == {str(tmp_path / "a.bin"), str(tmp_path / "c.bin")}
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".unverified") == ["a.bin.unverified",
                                                                                      "c.bin.unverified"]
    n = len(http_server.requests)
    (tmp_path / "c.bin.unverified").unlink()  # a lost marker does not make a cached file verified
    with record_unverified() as again:  # reused from the cache: still unverified
        download(http_server.url("/a.bin"), tmp_path / "a.bin", progress=False)
        download(http_server.url("/c.bin"), tmp_path / "c.bin", progress=False)
    assert again == {str(tmp_path / "a.bin"), str(tmp_path / "c.bin")} and len(http_server.requests) == n
    assert (tmp_path / "c.bin.unverified").exists()


def test_unverified_downloads_reach_metrics_data_json(mini_taco, http_server, tmp_path):  # noqa: F811
    from elimnet.pipeline.prepare_stage import run_prepare

    http_server.no_length |= {f"/flickr/{i}.png" for i in (0, 1)}
    cfg = cfg_for(tmp_path, **{"data.name": "taco", "data.taco.mapping": TACO_MAPPING, "data.taco.min_size": 8,
                               "data.taco.padding": 0.0, "data.taco.workers": 2, "data.val_fraction": 0.25,
                               "data.test_fraction": 0.25, **FIXED_SPLIT})  # too few images for 5 folds
    run_prepare(cfg, tmp_path / "prepared", tmp_path / "metrics" / "data.json")
    data = json.loads((tmp_path / "metrics" / "data.json").read_text())
    folder = tmp_path / "raw" / "taco" / "images"
    images = sorted(str(p) for p in folder.rglob("*.jpg"))  # TACO publishes no image hashes
    assert len(images) == 4  # one of the 5 needed images is a dead link in mini_taco
    annotations = str(tmp_path / "raw" / "taco" / "annotations.json")  # first use: nothing to compare with
    assert data["unverified_downloads"] == {"count": 5, "files": sorted([annotations, *images])}
    run_prepare(cfg, tmp_path / "prepared", tmp_path / "metrics" / "data.json")  # its sha256 is pinned now
    again = json.loads((tmp_path / "metrics" / "data.json").read_text())["unverified_downloads"]
    assert again == {"count": 4, "files": images}


# ----------------------------------------------------------------------------- paths that leave the folder
def _tgz(members: list[tarfile.TarInfo]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info in members:
            data = b"x" * info.size if info.isfile() else None
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = 3 if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("bad", [_member("imagenette2-160/../../escaped.txt"),
                                 _member("/tmp/elimnet-absolute-escape.txt"),
                                 _member("imagenette2-160/link", tarfile.SYMTYPE, "../../../etc/passwd")])
def test_archive_member_leaving_the_folder_refuses_the_archive(tmp_path, bad):
    archive = tmp_path / "raw" / "a.tgz"
    archive.parent.mkdir(parents=True)
    archive.write_bytes(_tgz([_member("imagenette2-160/train/a.txt"), bad, _member("imagenette2-160/ok.txt")]))
    target = tmp_path / "raw" / "out"
    target.mkdir()
    with pytest.raises(DataError) as e:
        imagenette.extract_tar(archive, target)
    msg = str(e.value)
    assert "\n" not in msg and "(1 of " in msg and " entries refused)" in msg
    assert f"entry {bad.name!r}" in msg or f"entry '{bad.name} (link)' -> " in msg
    assert list(target.iterdir()) == []  # nothing extracted, not even the good members
    assert not (tmp_path / "escaped.txt").exists()


def test_refuse_escapes_counts_every_refusal(tmp_path):
    names = ["a/b.png", "../x.png", "/etc/y.png", "c/../../z.png", "c/../ok.png"]
    with pytest.raises(DataError, match=r"entry '\.\./x\.png' leaves .* \(3 of 5 entries refused\)"):
        refuse_escapes(tmp_path, names, "test")
    refuse_escapes(tmp_path, ["a/b.png", "c/../ok.png", "./d.png"], "test")  # all inside: no error


def test_taco_file_names_leaving_data_root_are_refused(mini_taco, http_server, tmp_path):  # noqa: F811
    coco = json.loads(mini_taco)
    outside = tmp_path / "outside.png"
    coco["images"][0]["file_name"] = "../../../outside.png"
    coco["images"][1]["file_name"] = str(outside)
    root = tmp_path / "data" / "raw"
    with pytest.raises(DataError) as e:
        taco.taco_samples(coco, root, mapping=TACO_MAPPING, padding=0.0, min_size=8, workers=2, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "'../../../outside.png'" in msg and "(2 of 6 entries refused)" in msg
    assert not outside.exists() and not [p for p, _ in http_server.requests if p.startswith("/flickr/")]


def test_archive_with_a_device_file_is_refused_by_the_data_filter(tmp_path):
    """Names inside the folder but a character device: tarfile's "data" filter (kept as a second guard)."""
    archive = tmp_path / "a.tgz"
    archive.write_bytes(_tgz([_member("imagenette2-160/ok.txt"), _member("imagenette2-160/tty", tarfile.CHRTYPE)]))
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(DataError, match=r"a\.tgz: cannot be extracted safely \(SpecialFileError"):
        imagenette.extract_tar(archive, target)
    assert not (target / "imagenette2-160" / "tty").exists()
