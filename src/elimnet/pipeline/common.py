"""What every stage shares: argument parsing, params, and one-line errors."""
from __future__ import annotations

import argparse
import os
from typing import Callable, Sequence

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from elimnet.config import add_params_arguments, params_from_args  # noqa: E402
from elimnet.errors import ElimnetError, one_line, run_guarded  # noqa: E402


def stage_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    add_params_arguments(p)
    return p


params_from = params_from_args  # the stages' name for it


# DVC deletes a stage's outputs before running it, and `dvc exp run -S` has already written params.yaml.
RECOVERY_HINT = "to get back to the last run: git checkout params.yaml && dvc checkout"


def run_stage(main: Callable[[Sequence[str] | None], None], argv: Sequence[str] | None = None) -> int:
    """Run a stage; user-facing failures print one line `error: ...` and exit 2 (130 for Ctrl-C).
    Run by DVC (which sets DVC_STAGE), a failing stage other than `params` (which restores params.yaml
    itself) ends its line with how to get the previous params and outputs back."""
    def call():
        try:
            return main(argv) and 0
        except ElimnetError as e:
            if os.environ.get("DVC_STAGE", "params") != "params" and RECOVERY_HINT not in str(e):
                e.args = (f"{one_line(e)}; {RECOVERY_HINT}",)
            raise

    return run_guarded(call)
