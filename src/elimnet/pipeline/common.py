"""What every stage shares: argument parsing, params, and one-line errors."""
from __future__ import annotations

import argparse
import os
from typing import Callable, Sequence

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from elimnet.config import add_params_arguments, params_from_args  # noqa: E402
from elimnet.errors import run_guarded  # noqa: E402


def stage_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    add_params_arguments(p)
    return p


params_from = params_from_args  # the stages' name for it


def run_stage(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage; user-facing failures print one line `error: ...` and exit 2 (130 for Ctrl-C)."""
    return run_guarded(lambda: main(argv) and 0)
