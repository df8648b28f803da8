"""The shared downloader against a loopback server: cache, checksum, resume, errors."""
import hashlib

import pytest

from elimnet.data.download import ChecksumError, DownloadError, download

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes


def test_download_verifies_and_caches(http_server, tmp_path):
    http_server.files["/w.bin"] = PAYLOAD
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    dest = download(http_server.url("/w.bin"), tmp_path / "w.bin", sha256=sha, progress=False)
    assert dest.read_bytes() == PAYLOAD
    download(http_server.url("/w.bin"), tmp_path / "w.bin", sha256=sha, progress=False)
    assert len(http_server.requests) == 1  # second call served from the cache


def test_wrong_checksum_is_rejected_and_nothing_left(http_server, tmp_path):
    http_server.files["/w.bin"] = PAYLOAD
    with pytest.raises(ChecksumError) as e:
        download(http_server.url("/w.bin"), tmp_path / "w.bin", sha256="0" * 64, progress=False)
    assert hashlib.sha256(PAYLOAD).hexdigest() in str(e.value) and "0" * 64 in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_cut_download_resumes_with_range(http_server, tmp_path):
    http_server.files["/w.bin"] = PAYLOAD
    http_server.cut_after["/w.bin"] = 30_000
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    dest = download(http_server.url("/w.bin"), tmp_path / "w.bin", sha256=sha, backoff_s=0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert len(http_server.requests) == 2
    assert http_server.requests[1][1].get("Range") == "bytes=30000-"


def test_sha256_prefix_as_in_torchvision_names(http_server, tmp_path):
    http_server.files["/m-abc.pth"] = PAYLOAD
    prefix = hashlib.sha256(PAYLOAD).hexdigest()[:8]
    assert download(http_server.url("/m-abc.pth"), tmp_path / "m.pth", sha256_prefix=prefix, progress=False).exists()


def test_unreachable_host_names_url_and_hint(tmp_path):
    with pytest.raises(DownloadError) as e:
        download("http://127.0.0.1:9/nothing.bin", tmp_path / "x", retries=1, backoff_s=0, progress=False,
                 offline_hint="data.name=elpv runs offline.")
    assert "http://127.0.0.1:9/nothing.bin" in str(e.value) and "data.name=elpv" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_404_fails_at_once(http_server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        download(http_server.url("/missing"), tmp_path / "x", progress=False)
    assert len(http_server.requests) == 1
