"""The one downloader: streaming with progress, Range resume, checksum, atomic rename, retries, cache.

    path = download(url, dest, sha256="9f...")   # or sha256_prefix="5c8d" (torchvision file names)
    path = download(url, dest, md5="e793...")    # where a publisher pins only md5 (fastai, torchvision)
    path = download_first([mirror1, mirror2], dest, md5=...)  # mirrors in order
    ok, failed = download_many([(url, dest), ...], workers=8)   # many small files in parallel

- A file already at `dest` whose checksum matches is reused: a second run downloads nothing.
- Bytes stream into `part_path(dest, url)` (one `.part` per URL: a mirror never resumes another's
  bytes), with the strong ETag (else Last-Modified) they were served under in `<part>.validator`.
  A retry resumes only with `Range` + `If-Range: <validator>` and appends only a 206 whose
  Content-Range starts at the `.part`'s size (and names no other version); anything else restarts
  from byte 0. The byte count must equal the announced total (`got != total` is an error).
- The checksum is verified before the file is moved into place; a mismatch deletes the
  partial file and raises with both hashes.
- Unreachable hosts raise one `DownloadError` naming the URL (and `offline_hint`).
- A `.part` that already holds the whole file (a run killed between the last byte and the rename)
  is verified and finalised: before any request when a checksum is pinned, else when the server
  answers the resume with 416 and a total equal to its size.
- `deadline_s` bounds one file's whole fetch, retries included (a slow drip never times out per
  read); the `.part` is kept, so a rerun resumes.
- A file with no pinned hash is never verified, whatever its length: it is marked by
  `<dest>.unverified` and listed by `record_unverified()` on every run that fetches or reuses it
  (the prepare stage writes the list into metrics/data.json).
- `refuse_escapes(root, names)`: annotation file names that would land outside `root` are refused
  in one line naming the first, with the count.
- `extract_tar(archive, target)`: a checked extraction loop (docs/reliability.md, Archives).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import http.client
import json
import os
import posixpath
import tarfile
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
UNVERIFIED_TEXT = "no checksum pinned: the bytes are whatever the server sent\n"
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


def _walk(target: Path, parts: list[str], links: set[str]) -> tuple[str | None, str]:
    """Resolve `parts` under `target` component by component: (relative path, "") or (None, why not).
    A component that is a link (one extracted from this archive, or one on disk) is refused rather than
    followed, so the walk is exact without realpath, which gives up on paths past PATH_MAX (CVE-2025-4517)."""
    stack: list[str] = []
    for comp in parts:
        if comp in ("", "."):
            continue
        if comp == "..":
            if not stack:
                return None, "leaves the target folder"
            stack.pop()
            continue
        stack.append(comp)
        here = "/".join(stack)
        if here in links or os.path.islink(target / here):
            return None, f"goes through the link {here!r}"
    return "/".join(stack), ""


def _member_refusal(target: Path, m: tarfile.TarInfo, links: set[str]) -> str:
    """Why member `m` must not be extracted into `target` (given the links extracted before it), or ""."""
    if m.name.startswith("/"):
        return "is an absolute path"
    if "\0" in m.name + m.linkname:
        return "holds a NUL byte"
    where, why = _walk(target, m.name.split("/"), links)
    if where is None:
        return why
    if m.issym() or m.islnk():
        if m.linkname.startswith("/"):
            return "points to an absolute path"
        # A symlink's target is relative to its own folder, a hard link's to the archive root.
        base = posixpath.dirname(m.name).split("/") if m.issym() else []
        to, why = _walk(target, base + m.linkname.split("/"), links)
        if to is None:
            return f"points to a path that {why}"
    return ""


def _refuse_members(archive: Path, target: Path, members: list[tarfile.TarInfo]) -> None:
    """Every member checked in archive order, links as they would exist by then; one DataError for all."""
    links: set[str] = set()
    refused = []
    for m in members:
        why = _member_refusal(target, m, links)
        if why:
            refused.append((m, why))
        elif m.issym():
            links.add(_walk(target, m.name.split("/"), links)[0])
    if refused:
        m, why = refused[0]
        entry = repr(m.name) if not (m.issym() or m.islnk()) else f"'{m.name} (link)' -> {m.linkname!r}"
        raise DataError(f"{archive}: entry {entry} {why} ({len(refused)} of {len(members)} entries refused); "
                        f"nothing was extracted, delete it to fetch again")


def extract_tar(archive: str | Path, target: str | Path) -> None:
    """Extract `archive` into `target`, refusing the whole archive in one line when any member or link
    target would land outside `target` or pass through a link (chained links included). Checked twice:
    all members before anything is written, then each member against the disk just before it is written.
    tarfile's "data" filter stays on as a third guard (device files, modes)."""
    archive, target = Path(archive), Path(target)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            _refuse_members(archive, target, members)
            links: set[str] = set()
            for m in members:
                why = _member_refusal(target, m, links)
                if why:  # the disk changed under us since the first pass
                    raise DataError(f"{archive}: entry {m.name!r} {why}; extraction stopped")
                where = _walk(target, m.name.split("/"), links)[0]  # before the link itself is on disk
                tar.extract(m, target, filter="data")
                if m.issym():
                    links.add(where)
    except (tarfile.FilterError, tarfile.ReadError, EOFError) as e:
        raise DataError(f"{archive}: cannot be extracted safely ({type(e).__name__}: {e}); "
                        f"delete it to fetch again") from e


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


def part_path(dest: str | Path, url: str) -> Path:
    """Where `url`'s bytes for `dest` stream: one `.part` per URL, so a mirror never resumes another's bytes."""
    dest = Path(dest)
    return dest.with_name(f"{dest.name}.{hashlib.sha256(url.encode()).hexdigest()[:12]}.part")


def _reuse_cached(dest: Path, marker: Path, pinned: bool) -> None:
    """A cached file with no pinned hash stays marked and listed as unverified on every run."""
    if pinned:
        marker.unlink(missing_ok=True)  # checked now
        return
    if not marker.exists():
        marker.write_text(UNVERIFIED_TEXT)
    _note_unverified(dest)


def download(url: str, dest: str | Path, *, sha256: str | None = None, sha256_prefix: str | None = None,
             md5: str | None = None, retries: int = 4, backoff_s: float = 1.0, timeout_s: float = 30.0,
             deadline_s: float | None = None, progress: bool = True, offline_hint: str = "") -> Path:
    """Fetch `url` to `dest` (see module doc). Returns `dest`."""
    dest = Path(dest)
    marker = dest.with_name(dest.name + UNVERIFIED_SUFFIX)
    pinned = bool(sha256 or sha256_prefix or md5)
    if dest.exists():
        if _check(dest, sha256, sha256_prefix, md5) is None:
            _reuse_cached(dest, marker, pinned)
            return dest
        dest.unlink()  # stale or corrupt: fetch again
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest, url)
    if pinned and part.exists() and _check(part, sha256, sha256_prefix, md5) is None:
        return _finalise(part, dest, marker, verified=True)  # complete from an earlier run: no request
    _fetch_with_retries(url, part, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                        deadline_s=deadline_s, progress=progress, offline_hint=offline_hint)
    mismatch = _check(part, sha256, sha256_prefix, md5)
    if mismatch:
        _discard(part)
        raise ChecksumError(f"{url}: checksum mismatch: {mismatch}; file deleted")
    return _finalise(part, dest, marker, verified=pinned)


def _fetch_with_retries(url: str, part: Path, *, retries: int, backoff_s: float, timeout_s: float,
                        deadline_s: float | None, progress: bool, offline_hint: str) -> None:
    end = time.monotonic() + deadline_s if deadline_s else None
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout_s, progress, end)
            return
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
    hint = f" {offline_hint}" if offline_hint else ""
    reason = getattr(last_error, "reason", last_error)
    raise DownloadError(f"could not download {url} after {retries + 1} tries ({reason}).{hint}") from last_error


def _finalise(part: Path, dest: Path, marker: Path, verified: bool) -> Path:
    """Move the finished .part into place; a file no pinned hash checked is marked and recorded."""
    if verified:
        marker.unlink(missing_ok=True)
    else:
        marker.write_text(UNVERIFIED_TEXT)
        _note_unverified(dest)
    os.replace(part, dest)
    _discard(part)  # its validator
    for other in dest.parent.glob(glob.escape(dest.name) + ".*.part"):  # another mirror's leftover bytes
        _discard(other)
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


def _content_range(headers) -> tuple[int | None, int | None]:
    """(first byte, total) of a `Content-Range: bytes a-b/total` (or `bytes */total`) header."""
    unit, _, spec = (headers.get("Content-Range") or "").strip().partition(" ")
    span, _, total = spec.partition("/")
    first = span.split("-")[0]
    return (int(first) if unit == "bytes" and first.isdigit() else None,
            int(total) if unit == "bytes" and total.isdigit() else None)


def _validator_path(part: Path) -> Path:
    return part.with_name(part.name + ".validator")


def _discard(part: Path) -> None:
    """Delete a .part and the validator that says which version of the file its bytes belong to."""
    part.unlink(missing_ok=True)
    _validator_path(part).unlink(missing_ok=True)


def _save_validator(part: Path, url: str, headers) -> None:
    """Remember the strong ETag (else Last-Modified) of the body now streaming into `part`: the only way
    to ask for the rest of *this* version later (If-Range). Without one, a cut download restarts."""
    etag = headers.get("ETag")
    value = etag if etag and not etag.startswith("W/") else headers.get("Last-Modified")
    if value:
        _validator_path(part).write_text(json.dumps({"url": url, "if_range": value}) + "\n")
    else:
        _validator_path(part).unlink(missing_ok=True)


def _resume_validator(part: Path, url: str) -> str | None:
    """The If-Range value for resuming `part` from `url`, or None (then the .part is dropped)."""
    try:
        saved = json.loads(_validator_path(part).read_text())
    except (OSError, ValueError):
        return None
    return saved.get("if_range") if isinstance(saved, dict) and saved.get("url") == url else None


def _changed(headers, validator: str | None) -> bool:
    """True when a 206 names a version other than the one the .part holds (a server ignoring If-Range)."""
    sent = headers.get("ETag") if validator and not validator.startswith("W/") and validator.startswith('"') \
        else headers.get("Last-Modified")
    return bool(sent) and sent != validator


def _open(url: str, part: Path, timeout_s: float):
    """(response or None when the .part is already complete, bytes already in the .part)."""
    have = part.stat().st_size if part.exists() else 0
    validator = _resume_validator(part, url) if have else None
    if have and validator is None:  # nothing ties these bytes to the server's current file
        _discard(part)
        have = 0
    req = urllib.request.Request(url, headers={"User-Agent": "elimnet"})
    if have:
        req.add_header("Range", f"bytes={have}-")
        req.add_header("If-Range", validator)  # a changed file comes back whole (200), never spliced
    try:
        return urllib.request.urlopen(req, timeout=timeout_s), have
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:
            raise
        if _content_range(e.headers)[1] == have:  # nothing past `have`, and the server's total agrees
            return None, have
        _discard(part)  # longer than the file, or no total to compare: start over
        raise OSError(f"{part.name} ({have} bytes) does not match the server's file "
                      f"({_content_range(e.headers)[1]} bytes); restarting from byte 0") from e


def _fetch(url: str, part: Path, timeout_s: float, progress: bool, end: float | None) -> None:
    """Stream `url` into `part`, appending only to bytes of the same version of the file; the byte count
    must equal the announced total, else OSError (retried: a short .part resumes, a long one restarts)."""
    def left() -> float:
        if end is None:
            return timeout_s
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise _Deadline
        return min(timeout_s, remaining)

    resp, have = _open(url, part, left())
    if resp is None:
        return
    with resp:
        if have and resp.status == 206:
            first, total = _content_range(resp.headers)
            if first != have or _changed(resp.headers, _resume_validator(part, url)):  # appending would splice
                _discard(part)
                raise OSError(f"server resumed at byte {first} of another version or offset, not at {have} of "
                              f"the same file; restarting from byte 0")
            length = resp.headers.get("Content-Length")
            if total is None and length is not None and length.isdigit():
                total = have + int(length)
        elif resp.status == 206:
            raise OSError("partial content (206) for a request without Range")
        else:  # a whole body: the first try, a server that ignores Range, or a file changed since (If-Range)
            have = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None and length.isdigit() else None
            _save_validator(part, url, resp.headers)
        got = _stream(resp, part, have, total, Path(url).name[:40], progress, left)
    if total is not None and got != total:
        if got > total:
            _discard(part)
            raise OSError(f"received {got} bytes, more than the {total} announced; restarting from byte 0")
        raise OSError(f"connection closed after {got} of {total} bytes")


def _stream(resp, part: Path, have: int, total: int | None, desc: str, progress: bool, left) -> int:
    """Append the body to `part` (from byte `have`); return the .part's size."""
    with open(part, "ab" if have else "wb") as f, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                                        unit_divisor=1024, desc=desc, disable=not progress,
                                                        leave=False) as bar:
        got = have
        while True:
            left()  # the deadline is checked between reads; each read waits at most timeout_s
            chunk = resp.read1(CHUNK)  # what has arrived, not a full CHUNK: a slow drip still returns
            if not chunk:
                return got
            f.write(chunk)
            got += len(chunk)
            bar.update(len(chunk))
