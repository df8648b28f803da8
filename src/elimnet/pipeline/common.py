"""What every stage shares: argument parsing, params, and one-line errors."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from elimnet.config import Config, ConfigError, add_params_arguments, load_params  # noqa: E402


from elimnet.errors import StageError  # noqa: E402,F401 - re-exported


def stage_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    add_params_arguments(p)
    return p


def params_from(args: argparse.Namespace) -> Config:
    return load_params(args.params, args.overrides)


def run_stage(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage; expected failures print one line `error: ...` and exit 2."""
    from elimnet.data.download import DownloadError
    from elimnet.data.prepare import DataError

    try:
        main(argv)
        return 0
    except (ConfigError, DataError, DownloadError, StageError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def set_threads(n: int | None) -> None:
    import torch

    if n:
        torch.set_num_threads(n)
