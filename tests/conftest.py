"""Shared test setup: no network, no telemetry, small thread counts, tiny data."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))

from elimnet.data.tensors import TensorSplit  # noqa: E402

# ----------------------------------------------------------------------------- hermetic: never the workspace
# Tests see the project as committed (HEAD), never the user's workspace: after `dvc exp run -S ...` (or a
# failed one) params.yaml, metrics/ and mlflow.db hold whatever the user left there.
ROOT = Path(__file__).resolve().parent.parent
WORKSPACE_STATE = ("params.yaml", "dvc.lock", "mlflow.db", "optuna.db", "metrics", "models", "data", "plots", "resolved",
                   "reports", "dvc_plots", "mlruns", "mlartifacts")
_opened: list[str] = []
_auditing = False


def _audit(event: str, args) -> None:
    if not _auditing or event not in ("open", "sqlite3.connect") or not args:
        return
    path = args[0]
    if not isinstance(path, (str, bytes, os.PathLike)) or isinstance(path, int):
        return
    path = os.fsdecode(path)
    if not os.path.isabs(path) and event == "open" and args[1] is None:  # os.open(..., dir_fd=...) (shutil.rmtree): not the cwd
        return
    try:
        rel = Path(os.path.abspath(path)).relative_to(ROOT)
    except ValueError:
        return
    if rel.parts and rel.parts[0] in WORKSPACE_STATE:
        _opened.append(str(rel))


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def no_workspace_reads():
    """Fail a test that opens the workspace's params.yaml, outputs, metrics or MLflow store."""
    global _auditing
    _opened.clear()
    _auditing = True
    yield
    _auditing = False
    if _opened:
        pytest.fail(f"read the workspace's {sorted(set(_opened))}: use head_file()/hermetic_repo() or tmp_path")


def head_file(rel: str) -> str:
    """The committed text of `rel` (git show HEAD:rel), whatever the workspace holds."""
    out = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"needs a git checkout to read HEAD:{rel}: {out.stderr.strip()}")
    return out.stdout


def hermetic_repo(dest: Path, exclude: tuple[str, ...] = ()) -> Path:
    """The files of HEAD (`git archive`, so `git ls-files` at HEAD) extracted into `dest`, minus paths
    starting with one of `exclude`; a fresh git repo with one commit."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "archive", "--format=tar", "HEAD"], cwd=ROOT, capture_output=True)
    if archive.returncode != 0:
        pytest.skip(f"needs a git checkout: {archive.stderr.decode().strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        members = [m for m in tar.getmembers() if not m.name.startswith(exclude)]
        tar.extractall(dest, members=members, filter="data")
    git_commit_all(dest, "HEAD of elimnet")
    return dest


GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def git_commit_all(repo: Path, message: str) -> None:
    env = dict(os.environ, **GIT_ENV)
    if not (repo / ".git").exists():
        subprocess.run(["git", "init", "-q"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", message, "--allow-empty"], cwd=repo, env=env, check=True)


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


# ----------------------------------------------------------------------------- pins against the default recipe
# The default recipe is 5-fold cross-validation (data.folds 5, repeat r = fold r, 7+ images per class): tests whose
# tiny data cannot hold 5 folds, or that are about one fixed split, pin it (params.yaml trees: data: {folds: 0}).
FIXED_SPLIT = {"data.folds": 0}


def fixed_split_repeats(repeats: int) -> list[str]:
    """-S overrides: one fixed split trained `repeats` times (repeats are training seeds on it, not folds)."""
    return [*(f"{k}={v}" for k, v in FIXED_SPLIT.items()), f"train.repeats={repeats}",
            f"train.repeat_ids={list(range(repeats))}"]


# ----------------------------------------------------------------------------- loopback HTTP server
class LoopbackServer:
    """Serves in-memory files on 127.0.0.1 with HTTP Range support, and records every request.

    server.files["/a.tar"] = b"..."; server.url("/a.tar")
    server.cut_after["/a.tar"] = 1000   # the next response for that path closes after 1000 bytes
    server.no_length.add("/a.tar")      # no Content-Length: the body ends when the connection closes
    server.drip["/a.tar"] = 0.05        # 256 bytes, then a pause of 0.05 s, and so on (a slow drip)
    server.no_etag.add("/a.tar")        # no ETag: nothing a client can resume against (If-Range)
    server.requests -> [(path, headers dict)]

    A Range starting at or past the end is answered 416 with `Content-Range: bytes */<size>`, as S3 does.
    """

    def __init__(self):
        import hashlib
        import http.server
        import threading

        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}
        self.no_length: set[str] = set()
        self.drip: dict[str, float] = {}
        self.no_etag: set[str] = set()
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
                etag = '"' + hashlib.sha256(data).hexdigest()[:16] + '"'
                rng = self.headers.get("Range")
                if self.headers.get("If-Range") not in (None, etag):  # changed since: the whole file
                    rng = None
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
                if path not in outer.no_etag:
                    self.send_header("ETag", etag)
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
