"""`elimnet` command line: sizing, benchmarking and comparing without running the pipeline.

    elimnet summary -S model.arch=resnet18 -S model.elim=2 --num-classes 6 [--json]
    elimnet bench -S model.arch=resnet18 -S model.elim=2 -S bench.batch_sizes=[1,8] [-S bench.ort=true]
    elimnet compare [--rev REV ... | --all-commits] [--wide] [--out DIR]
    elimnet exp [--all-commits] [-- DVC_EXP_SHOW_ARGS]
    elimnet reproduce [--ref HEAD] [--json]
    elimnet plan --budget 0.33 [--trials 30] [--minutes 60] [--storage postgresql://...]

Every command takes the same `-S key=value` overrides as `dvc exp run -S`, on top of
params.yaml when one is in the current directory.

One module per command in this package (accelerate's `commands/` layout): it declares `HELP`,
`configure(parser)` for its sub-parser and `run(args) -> int`; the parser is assembled from the
modules found here, so adding a command is adding a module. Modules starting with `_` are helpers.
A module that sets `PASSES_UNKNOWN_ARGS = True` gets the options argparse doesn't know in `args.unknown`.
"""
from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
from types import ModuleType
from typing import Sequence

from elimnet.errors import run_guarded


def commands() -> dict[str, ModuleType]:
    """name -> module of every command in this package, in alphabetical order."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            found[info.name] = importlib.import_module(f"{__name__}.{info.name}")
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elimnet", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in commands().items():
        module.configure(sub.add_parser(name, help=module.HELP, description=module.HELP))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = commands()[args.command]
    # A wrapper (`elimnet exp`) hands the options it doesn't know to the tool it wraps; others refuse them.
    if unknown and not getattr(module, "PASSES_UNKNOWN_ARGS", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.unknown = unknown
    return run_guarded(module.run, args)
