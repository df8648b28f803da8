"""Shared test setup: no network, no telemetry, small thread counts, tiny data."""
from __future__ import annotations

import os

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

from elimnet.data.tensors import TensorSplit  # noqa: E402


@pytest.fixture(autouse=True)
def no_leaked_tracking_uri():
    """A test (or the code under test) that leaves MLFLOW_TRACKING_URI behind would point every later
    test at its store, or at a server it has stopped: fail the test that leaks, not the victim."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    after = os.environ.get("MLFLOW_TRACKING_URI")
    if after != before:
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = before
        pytest.fail(f"MLFLOW_TRACKING_URI leaked: {before!r} before the test, {after!r} after it")


@pytest.fixture(scope="module")
def one_thread():
    """Small forward passes: on a shared 2-core machine a second torch thread only spins."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def tiny_split():
    """A seeded 4-class split of 32x32 uint8 images whose classes differ by mean brightness."""
    def make(n_per_class: int = 8, size: int = 32, classes: int = 4, channels: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        xs, ys = [], []
        for c in range(classes):
            base = 30 + c * (180 // max(1, classes - 1))
            x = (base + torch.randint(-20, 20, (n_per_class, channels, size, size), generator=g)).clamp(0, 255)
            xs.append(x.to(torch.uint8))
            ys.append(torch.full((n_per_class,), c, dtype=torch.int64))
        return TensorSplit(torch.cat(xs), torch.cat(ys))
    return make


# ----------------------------------------------------------------------------- loopback HTTP server
class LoopbackServer:
    """Serves in-memory files on 127.0.0.1 with HTTP Range support, and records every request.

    server.files["/a.tar"] = b"..."; server.url("/a.tar")
    server.cut_after["/a.tar"] = 1000   # the next response for that path closes after 1000 bytes
    server.no_length.add("/a.tar")      # no Content-Length: the body ends when the connection closes
    server.drip["/a.tar"] = 0.05        # 256 bytes, then a pause of 0.05 s, and so on (a slow drip)
    server.requests -> [(path, headers dict)]

    A Range starting at or past the end is answered 416 with `Content-Range: bytes */<size>`, as S3 does.
    """

    def __init__(self):
        import http.server
        import threading

        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}
        self.no_length: set[str] = set()
        self.drip: dict[str, float] = {}
        self.requests: list[tuple[str, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                outer.requests.append((path, dict(self.headers)))
                if path not in outer.files:
                    self.send_error(404, "not found")
                    return
                data = outer.files[path]
                start, status = 0, 200
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    status = 206
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                body = data[start:]
                self.send_response(status)
                if path in outer.no_length:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                else:
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                cut = outer.cut_after.pop(path, None)
                if cut is not None:
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                delay = outer.drip.get(path)
                if delay is not None:
                    pause = threading.Event()  # not time.sleep: tests patch it away to skip backoff
                    try:
                        for i in range(0, len(body), 256):
                            self.wfile.write(body[i:i + 256])
                            self.wfile.flush()
                            pause.wait(delay)
                    except OSError:  # the client gave up
                        self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def http_server():
    server = LoopbackServer()
    yield server
    server.close()
