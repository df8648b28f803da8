"""The one downloader: streaming with progress, Range resume, checksum, atomic rename, retries, cache.

    path = download(url, dest, sha256="9f...")   # or sha256_prefix="5c8d" (torchvision file names)
    path = download(url, dest, md5="e793...")    # where a publisher pins only md5 (fastai, torchvision)
    path = download_first([mirror1, mirror2], dest, md5=...)  # mirrors in order
    ok, failed = download_many([(url, dest), ...], workers=8)   # many small files in parallel

- A file already at `dest` whose checksum matches is reused: a second run downloads nothing.
- Bytes stream into `dest.part`; after a dropped connection the next try sends
  `Range: bytes=N-` and appends (a server that ignores Range restarts from zero).
- The checksum is verified before the file is moved into place; a mismatch deletes the
  partial file and raises with both hashes.
- Unreachable hosts raise one `DownloadError` naming the URL (and `offline_hint`).
- A `.part` that already holds the whole file (a run killed between the last byte and the rename)
  is verified and finalised: before any request when a checksum is pinned, else when the server
  answers the resume with 416 and a total equal to its size.
- `deadline_s` bounds one file's whole fetch, retries included (a slow drip never times out per
  read); the `.part` is kept, so a rerun resumes.
- A body shorter than its Content-Length is an error (retried with Range). A body with neither a
  length nor a checksum cannot be verified: it is kept, marked by `<dest>.unverified`, and listed
  by `record_unverified()` (the prepare stage writes the list into metrics/data.json).
- `refuse_escapes(root, names)`: archive members and annotation file names that would land
  outside `root` are refused in one line naming the first, with the count.
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 16
# Every online data source passes this, so an offline user learns the way out in one line.
OFFLINE_HINT = "No network? data.name=elpv runs offline (its images ship in a PyPI package)."


from elimnet.errors import ChecksumError, DataError, DownloadError  # noqa: E402,F401 - re-exported

UNVERIFIED_SUFFIX = ".unverified"
_recorders: list[set[str]] = []


@contextlib.contextmanager
def record_unverified():
    """Yield a set that collects, during the block, every file fetched or reused without any check
    (no checksum pinned, no length sent). Threads of download_many report into it too."""
    found: set[str] = set()
    _recorders.append(found)
    try:
        yield found
    finally:
        _recorders.remove(found)


def _note_unverified(dest: Path) -> None:
    for found in list(_recorders):
        found.add(str(dest))


def escapes(root: Path, name: str) -> bool:
    """True when `name`, joined to `root` and resolved (.., absolute paths, symlinks), lands outside it."""
    root = root.resolve()
    try:
        target = (root / name).resolve()
    except (ValueError, OSError, RuntimeError):  # NUL byte, symlink loop: not a name we will write
        return True
    return not target.is_relative_to(root)  # root itself ("./" in many tars) stays inside


def refuse_escapes(root: str | Path, names: list[str] | dict[str, str], what: str) -> None:
    """Raise one DataError naming the first of `names` (archive members, annotation file names) that
    would be written outside `root`, and how many do; return quietly when none does.
    A dict maps the entry's name to the path it resolves (a link's target)."""
    root = Path(root)
    pairs = names.items() if isinstance(names, dict) else [(n, n) for n in names]
    bad = [(shown, n) for shown, n in pairs if escapes(root, n)]
    if bad:
        shown, n = bad[0]
        entry = repr(shown) + (f" -> {n!r}" if n != shown else "")
        raise DataError(f"{what}: entry {entry} leaves {root} ({len(bad)} of {len(names)} entries refused); "
                        f"nothing was written from it")


class _Deadline(Exception):
    pass


def sha256_file(path: str | Path) -> str:
    return file_digests(path)[0]


def file_digests(path: str | Path, md5: bool = False) -> tuple[str, str | None]:
    """(sha256, md5 or None) of a file, in one pass."""
    h, m = hashlib.sha256(), (hashlib.md5(usedforsecurity=False) if md5 else None)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            if m is not None:
                m.update(block)
    return h.hexdigest(), (m.hexdigest() if m is not None else None)


def _check(path: Path, sha256: str | None, sha256_prefix: str | None, md5: str | None) -> str | None:
    """None when the file matches every given checksum, else 'expected ..., got ...'."""
    if not (sha256 or sha256_prefix or md5):
        return None
    digest, md5_digest = file_digests(path, md5=bool(md5))
    if sha256 and digest != sha256.lower():
        return f"expected sha256 {sha256}, got {digest}"
    if sha256_prefix and not digest.startswith(sha256_prefix.lower()):
        return f"expected sha256 {sha256_prefix}..., got {digest}"
    if md5 and md5_digest != md5.lower():
        return f"expected md5 {md5}, got {md5_digest}"
    return None


def download(url: str, dest: str | Path, *, sha256: str | None = None, sha256_prefix: str | None = None,
             md5: str | None = None, retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 30.0,
             deadline_s: float | None = None, progress: bool = True, offline_hint: str = "") -> Path:
    """Fetch `url` to `dest` (see module doc). Returns `dest`."""
    dest = Path(dest)
    marker = dest.with_name(dest.name + UNVERIFIED_SUFFIX)
    pinned = bool(sha256 or sha256_prefix or md5)
    if dest.exists():
        if _check(dest, sha256, sha256_prefix, md5) is None:
            if marker.exists():
                if pinned:
                    marker.unlink()  # checked now
                else:
                    _note_unverified(dest)
            return dest  # cached
        dest.unlink()  # stale or corrupt: fetch again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if pinned and part.exists() and _check(part, sha256, sha256_prefix, md5) is None:
        return _finalise(part, dest, marker, verified=True)  # complete from an earlier run: no request
    end = time.monotonic() + deadline_s if deadline_s else None
    last_error: Exception | None = None
    sized = False
    for attempt in range(retries + 1):
        try:
            sized = _fetch(url, part, timeout_s, progress, end)
            break
        except _Deadline:
            have = part.stat().st_size if part.exists() else 0
            raise DownloadError(f"{url}: not complete after {deadline_s:g} s (data.download_timeout_s); "
                                f"{have} bytes kept in {part.name}, a rerun resumes") from None
        except urllib.error.HTTPError as e:
            if e.code in (404, 403, 401, 410):  # won't get better by retrying
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
            last_error = e
        except (urllib.error.URLError, OSError, TimeoutError, http.client.HTTPException) as e:  # IncompleteRead
            last_error = e
        if attempt < retries:
            wait = backoff_s * (2 ** attempt)
            if end is not None and time.monotonic() + wait >= end:
                raise DownloadError(f"{url}: not complete after {deadline_s:g} s (data.download_timeout_s) "
                                    f"({getattr(last_error, 'reason', last_error)}); a rerun resumes") from last_error
            time.sleep(wait)
    else:
        hint = f" {offline_hint}" if offline_hint else ""
        reason = getattr(last_error, "reason", last_error)
        raise DownloadError(f"could not download {url} after {retries + 1} tries ({reason}).{hint}") from last_error
    mismatch = _check(part, sha256, sha256_prefix, md5)
    if mismatch:
        part.unlink(missing_ok=True)
        raise ChecksumError(f"{url}: checksum mismatch: {mismatch}; file deleted")
    return _finalise(part, dest, marker, verified=pinned or sized)


def _finalise(part: Path, dest: Path, marker: Path, verified: bool) -> Path:
    """Move the finished .part into place; a file nothing could check is marked and recorded."""
    if verified:
        marker.unlink(missing_ok=True)
    else:
        marker.write_text("no checksum pinned and no Content-Length sent: completeness unknown\n")
        _note_unverified(dest)
    os.replace(part, dest)
    return dest


def download_first(urls: list[str], dest: str | Path, **kwargs) -> Path:
    """Try mirrors in order (a mirror that fails for good passes to the next); a checksum
    mismatch stops at once, since another mirror serving different bytes is no better."""
    last: DownloadError | None = None
    for url in urls:
        try:
            return download(url, dest, **kwargs)
        except ChecksumError:
            raise
        except DownloadError as e:
            last = e
    assert last is not None, "download_first needs at least one URL"
    raise last


def download_many(items: list[tuple[str, str | Path]], *, workers: int = 8, desc: str = "download",
                  progress: bool = True, **kwargs) -> tuple[list[Path], dict[str, str]]:
    """Fetch many (url, dest) pairs in a thread pool, each through `download` (cache, resume, retries).

    Returns (paths that arrived, {url: error} for those that failed for good): one dead link among
    thousands must not sink the rest; the caller decides what too many failures mean.
    """
    from concurrent.futures import ThreadPoolExecutor, as_completed

    ok: list[Path] = []
    failed: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool, \
            tqdm(total=len(items), desc=desc, unit="file", disable=not progress, mininterval=1.0) as bar:
        futures = {pool.submit(download, url, dest, progress=False, **kwargs): url for url, dest in items}
        for fut in as_completed(futures):
            try:
                ok.append(fut.result())
            except DownloadError as e:
                failed[futures[fut]] = str(e)
            bar.update(1)
    return ok, failed


def _content_range_total(headers) -> int | None:
    total = (headers.get("Content-Range") or "").rsplit("/", 1)[-1]
    return int(total) if total.isdigit() else None


def _fetch(url: str, part: Path, timeout_s: float, progress: bool, end: float | None) -> bool:
    """Stream `url` into `part` (resuming it); return whether the size was checked against a length."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "elimnet"})
    if have:
        req.add_header("Range", f"bytes={have}-")

    def left() -> float:
        if end is None:
            return timeout_s
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise _Deadline
        return min(timeout_s, remaining)

    try:
        resp = urllib.request.urlopen(req, timeout=left())
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:
            raise
        # Nothing left past `have`: the .part is complete if the server's total says so.
        total = _content_range_total(e.headers)
        if total == have:
            return True
        part.unlink()  # longer than the file, or no total to compare: start over
        raise OSError(f"{part.name} ({have} bytes) does not match the server's file ({total} bytes); "
                      f"restarting") from e
    with resp:
        if have and resp.status != 206:  # Range ignored: start over
            have = 0
        length = resp.headers.get("Content-Length")
        total = int(length) + have if length is not None else None
        if have and resp.status == 206:
            total = _content_range_total(resp.headers) or total
        mode = "ab" if have else "wb"
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                         desc=Path(url).name[:40], disable=not progress, leave=False) as bar:
            got = have
            while True:
                left()  # the deadline is checked between reads; each read waits at most timeout_s
                chunk = resp.read1(CHUNK)  # what has arrived, not a full CHUNK: a slow drip still returns
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        if total is not None and got < total:
            raise OSError(f"connection closed after {got} of {total} bytes")
        return total is not None
