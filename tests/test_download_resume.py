"""Resumes that can only append bytes of the same file version at the right offset, else restart from byte 0
(loopback servers, some of them lying about what they send)."""
from __future__ import annotations

import hashlib
import http.server
import threading

import pytest

import elimnet.data.download as download_mod
from elimnet.data.download import DownloadError, download, download_first, part_path, record_unverified

PAYLOAD = bytes(range(250)) * 4  # 1,000 bytes
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(download_mod.time, "sleep", lambda s: None)


class RangeLiar:
    """Serves PAYLOAD under `etag`; a ranged request gets 206 with a Content-Range starting at
    `claim_start(start)` and the body `body_for_range(start)` (by default: the asked start, but the whole
    file from byte 0)."""

    def __init__(self, etag='"v1"', body_for_range=lambda start: PAYLOAD, claim_start=lambda start: start):
        self.requests: list[dict] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append(dict(self.headers))
                rng = self.headers.get("Range")
                start = int(rng[6:].split("-")[0]) if rng else 0
                body = body_for_range(start) if rng else PAYLOAD
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                if rng:
                    self.send_header("Content-Range", f"bytes {claim_start(start)}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/f.bin"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def liar_factory():
    made = []

    def make(**kwargs) -> RangeLiar:
        made.append(RangeLiar(**kwargs))
        return made[-1]

    yield make
    for server in made:
        server.close()


def _stale_part(dest, url, data: bytes, etag: str | None = '"v1"'):
    part = part_path(dest, url)
    part.write_bytes(data)
    if etag:
        download_mod._save_validator(part, url, {"ETag": etag})
    return part


def test_stale_part_without_a_validator_restarts_from_byte_0(liar_factory, tmp_path):
    """400 wrong bytes from an earlier run that recorded no ETag: appending the rest would make a 1,000-byte
    file that is wrong (issue 27); nothing ties them to this file, so they are dropped."""
    server = liar_factory()
    dest = tmp_path / "f.bin"
    _stale_part(dest, server.url, b"\xff" * 400, etag=None)
    with record_unverified() as unverified:
        assert download(server.url, dest, progress=False).read_bytes() == PAYLOAD
    assert [h.get("Range") for h in server.requests] == [None]
    assert unverified == {str(dest)}


def test_206_that_sends_from_byte_0_is_refused_and_restarted(liar_factory, tmp_path):
    """Claims bytes 400-999 and sends 1,000 bytes from byte 0: a 1,400-byte splice before the fix."""
    server = liar_factory()
    dest = tmp_path / "f.bin"
    _stale_part(dest, server.url, PAYLOAD[:400])
    assert download(server.url, dest, progress=False).read_bytes() == PAYLOAD
    assert [h.get("Range") for h in server.requests] == ["bytes=400-", None]
    assert server.requests[0]["If-Range"] == '"v1"'


def test_content_range_start_other_than_the_part_size_restarts(liar_factory, tmp_path):
    """Asked for bytes 400-, answers bytes 0-999 (all of it, honestly labelled): not appended."""
    server = liar_factory(claim_start=lambda start: 0)
    dest = tmp_path / "f.bin"
    _stale_part(dest, server.url, PAYLOAD[:400])
    assert download(server.url, dest, sha256=SHA, progress=False).read_bytes() == PAYLOAD
    assert [h.get("Range") for h in server.requests] == ["bytes=400-", None]


def test_206_of_another_version_is_refused_when_the_server_ignores_if_range(liar_factory, tmp_path):
    """The .part holds v1's first 400 bytes; the server now has v2 and answers the range anyway (no If-Range
    support), naming v2 in its ETag: appending would mix two versions."""
    server = liar_factory(etag='"v2"', body_for_range=lambda start: PAYLOAD[start:])
    dest = tmp_path / "f.bin"
    _stale_part(dest, server.url, b"\x01" * 400, etag='"v1"')
    assert download(server.url, dest, progress=False).read_bytes() == PAYLOAD
    assert [h.get("Range") for h in server.requests] == ["bytes=400-", None]


def test_changed_file_comes_back_whole_through_if_range(http_server, tmp_path):
    """An honest server whose file changed answers the If-Range resume with 200 and the whole new file."""
    http_server.files["/f.bin"] = PAYLOAD
    url, dest = http_server.url("/f.bin"), tmp_path / "f.bin"
    _stale_part(dest, url, b"\x02" * 400, etag='"an-older-version"')
    assert download(url, dest, sha256=SHA, progress=False).read_bytes() == PAYLOAD
    assert [h.get("Range") for _, h in http_server.requests] == ["bytes=400-"]  # one request, answered 200


def test_without_etag_or_last_modified_a_cut_download_restarts(http_server, tmp_path):
    http_server.files["/f.bin"] = PAYLOAD
    http_server.no_etag.add("/f.bin")
    http_server.cut_after["/f.bin"] = 300
    dest = download(http_server.url("/f.bin"), tmp_path / "f.bin", sha256=SHA, progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert [h.get("Range") for _, h in http_server.requests] == [None, None]


def test_last_modified_is_the_validator_when_there_is_no_etag(tmp_path):
    part = tmp_path / "x.part"
    download_mod._save_validator(part, "http://h/x", {"ETag": 'W/"weak"', "Last-Modified": "Tue, 01 Dec 2026"})
    assert download_mod._resume_validator(part, "http://h/x") == "Tue, 01 Dec 2026"
    assert download_mod._resume_validator(part, "http://other/x") is None  # another URL's bytes


def test_a_mirror_never_resumes_another_mirrors_part(http_server, tmp_path):
    """Mirror 1 is cut after 400 bytes and then gone; mirror 2 (a moving branch) serves other bytes of the
    same length. Before the fix its 206 was appended to mirror 1's bytes and the splice's sha256 pinned."""
    other = bytes(reversed(PAYLOAD))
    http_server.files["/one/f.bin"] = PAYLOAD
    http_server.files["/two/f.bin"] = other
    http_server.cut_after["/one/f.bin"] = 400
    one, two, dest = http_server.url("/one/f.bin"), http_server.url("/two/f.bin"), tmp_path / "f.bin"
    with pytest.raises(DownloadError):
        download(one, dest, retries=0, progress=False)
    assert part_path(dest, one).stat().st_size == 400
    del http_server.files["/one/f.bin"]
    assert download_first([one, two], dest, progress=False).read_bytes() == other
    assert [h.get("Range") for p, h in http_server.requests if p == "/two/f.bin"] == [None]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin", "f.bin.unverified"]  # mirror 1's .part gone


def test_body_longer_than_the_announced_total_is_an_error(liar_factory, tmp_path):
    server = liar_factory()
    dest = tmp_path / "f.bin"
    _stale_part(dest, server.url, PAYLOAD[:400])
    with pytest.raises(DownloadError, match=r"received 1400 bytes, more than the 1000 announced"):
        download(server.url, dest, retries=0, progress=False)
    assert not dest.exists() and not part_path(dest, server.url).exists()
