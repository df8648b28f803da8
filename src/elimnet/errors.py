"""The one error path. A leaf module: it imports nothing of the package.

Every failure a user can cause is an `ElimnetError` whose str() is one line naming the key,
file or value and what is allowed or what to do. The stage runner and the CLI catch it,
print `error: <line>` and exit 2 (130 for Ctrl-C); ELIMNET_DEBUG=1 shows the traceback.
"""
from __future__ import annotations

import os


class ElimnetError(Exception):
    """Base of every user-facing failure: one line, no traceback, exit code `exit_code`."""
    exit_code = 2


# ValueError/RuntimeError stay in the bases so `except ValueError` callers keep working.
class ConfigError(ElimnetError, ValueError):
    """A parameter or params file is bad (names key, value and what is allowed)."""


class DataError(ElimnetError, ValueError):
    """The data cannot be fetched, split or decoded as asked (names the class, path or entry)."""


class DownloadError(ElimnetError, RuntimeError):
    """A download failed for good (unreachable, HTTP error, short body or checksum mismatch)."""


class ChecksumError(DownloadError):
    """A downloaded file's hash differs from the pinned one (the file is deleted)."""


class CheckpointError(ElimnetError, ValueError):
    """A model file is missing, unreadable, tampered with, or holds another architecture."""


class StageError(ElimnetError, RuntimeError):
    """A stage cannot run with the inputs it was given (e.g. an output of another arch upstream)."""


def debug() -> bool:
    """ELIMNET_DEBUG=1: show tracebacks instead of one-line errors."""
    return os.environ.get("ELIMNET_DEBUG", "") not in ("", "0", "false")


def one_line(err: BaseException) -> str:
    """str(err) folded onto one line (multi-line library messages keep their first line)."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]


def run_guarded(fn, *args, **kwargs) -> int:
    """Call fn; a user-facing failure becomes one line on stderr and its exit code (the stage runner and the CLI)."""
    import sys

    try:
        return fn(*args, **kwargs) or 0
    except ElimnetError as e:
        if debug():
            raise
        print(f"error: {one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if debug():
            raise
        # Outputs are written atomically, so an interrupt leaves the previous files in place.
        print("error: interrupted (Ctrl-C); no output was half-written, rerun the same command to continue",
              file=sys.stderr)
        return 130
