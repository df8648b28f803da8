"""The one downloader: streaming with progress, Range resume, checksum, atomic rename, retries, cache.

    path = download(url, dest, sha256="9f...")   # or sha256_prefix="5c8d" (torchvision file names)

- A file already at `dest` whose checksum matches is reused: a second run downloads nothing.
- Bytes stream into `dest.part`; after a dropped connection the next try sends
  `Range: bytes=N-` and appends (a server that ignores Range restarts from zero).
- The checksum is verified before the file is moved into place; a mismatch deletes the
  partial file and raises with both hashes.
- Unreachable hosts raise one `DownloadError` naming the URL (and `offline_hint`).
"""
from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 16


class DownloadError(RuntimeError):
    """A download failed for good (unreachable, HTTP error, or checksum mismatch)."""


class ChecksumError(DownloadError):
    pass


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _matches(digest: str, sha256: str | None, sha256_prefix: str | None) -> bool:
    if sha256 and digest != sha256.lower():
        return False
    if sha256_prefix and not digest.startswith(sha256_prefix.lower()):
        return False
    return True


def download(url: str, dest: str | Path, *, sha256: str | None = None, sha256_prefix: str | None = None,
             retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 30.0, progress: bool = True,
             offline_hint: str = "") -> Path:
    """Fetch `url` to `dest` (see module doc). Returns `dest`."""
    dest = Path(dest)
    if dest.exists():
        digest = sha256_file(dest)
        if _matches(digest, sha256, sha256_prefix):
            return dest  # cached
        dest.unlink()  # stale or corrupt: fetch again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout_s, progress)
            break
        except urllib.error.HTTPError as e:
            if e.code in (404, 403, 401, 410):  # won't get better by retrying
                raise DownloadError(f"{url}: HTTP {e.code} {e.reason}") from e
            last_error = e
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            last_error = e
        if attempt < retries:
            time.sleep(backoff_s * (2 ** attempt))
    else:
        hint = f" {offline_hint}" if offline_hint else ""
        reason = getattr(last_error, "reason", last_error)
        raise DownloadError(f"could not download {url} after {retries + 1} tries ({reason}).{hint}") from last_error
    digest = sha256_file(part)
    if not _matches(digest, sha256, sha256_prefix):
        part.unlink(missing_ok=True)
        expected = sha256 or f"{sha256_prefix}..."
        raise ChecksumError(f"{url}: checksum mismatch: expected sha256 {expected}, got {digest}; file deleted")
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, timeout_s: float, progress: bool) -> None:
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"User-Agent": "elimnet"})
    if have:
        req.add_header("Range", f"bytes={have}-")
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        if have and resp.status != 206:  # Range ignored: start over
            have = 0
        length = resp.headers.get("Content-Length")
        total = int(length) + have if length is not None else None
        if have and resp.status == 206:
            content_range = resp.headers.get("Content-Range", "")
            if "/" in content_range and content_range.rsplit("/", 1)[1].isdigit():
                total = int(content_range.rsplit("/", 1)[1])
        mode = "ab" if have else "wb"
        with open(part, mode) as f, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                         desc=Path(url).name[:40], disable=not progress, leave=False) as bar:
            got = have
            while True:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                f.write(chunk)
                got += len(chunk)
                bar.update(len(chunk))
        if total is not None and got < total:
            raise OSError(f"connection closed after {got} of {total} bytes")
