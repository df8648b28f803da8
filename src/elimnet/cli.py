"""`elimnet` command line: sizing, benchmarking and comparing without running the pipeline.

    elimnet summary -S model.arch=resnet18 -S model.elim=2 --num-classes 6 [--json]
    elimnet bench -S model.arch=resnet18 -S model.elim=2 -S bench.batch_sizes=[1,8] [-S bench.onnx=true]
    elimnet compare [--source dvc|mlflow] [--out-dir reports]
    elimnet reproduce [--ref HEAD] [--json]

Every command takes the same `-S key=value` overrides as `dvc exp run -S`, on top of
params.yaml when one is in the current directory.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, Sequence

from elimnet.config import add_params_arguments, params_from_args
from elimnet.data.prepare import default_num_classes
from elimnet.errors import ConfigError, run_guarded

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    def deco(fn):
        COMMANDS[name] = (help, configure, fn)
        return fn
    return deco


def _common(p: argparse.ArgumentParser) -> None:
    add_params_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _summary_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier size (default: the prepared data's classes, else 1000)")
    p.add_argument("--mac-table", action="store_true",
                   help="also print the candidate's per-operation MACs and filters (seed 002, Table 4 form)")


def summarize_model(cfg, num_classes: int) -> dict:
    """Sizes of the full model and the candidate the params describe: random init, no data, no download."""
    from elimnet.models import get_spec
    from elimnet.compress.build import build_from_params, describe

    arch, size = cfg["model.arch"], cfg["data.image_size"]
    from elimnet.compress.layerprune import LatencyCache
    # LayerPrune reuses the compress stage's timing table for the same key; read-only (a DVC output).
    candidate, steps, full = build_from_params(cfg, num_classes,
                                               latency_table=LatencyCache("metrics/block_latency.json", store=False))
    cand, full_d = describe(candidate, arch, size), describe(full, arch, size)
    kept = {s["name"] for s in cand["stages"]}
    stages = [{**s, "kept": s["name"] in kept} for s in full_d["stages"]]
    return {"arch": arch, "weights": cfg["model.weights"], "num_classes": num_classes, "image_size": size,
            "params": cand["params"], "macs": cand["macs"], "layers": cand["layers"], "modules": cand["modules"],
            "head": cand["head"], "removed_head": full_d["head"] and not cand["head"], "stages": stages,
            "removed_stages": [n for n in get_spec(arch).stage_names if n not in kept],
            "steps": [{"name": s["name"], **s["spec"]} for s in steps if s["name"] != "classifier"],
            "full": {k: full_d[k] for k in ("params", "macs", "layers", "modules")}}


@command("summary", "params, MACs, layers and kept/removed stages of a candidate (no data, no download)",
         _summary_args)
def cmd_summary(args) -> int:
    cfg = params_from_args(args)
    n = args.num_classes if args.num_classes is not None else default_num_classes()
    if n < 2:
        raise ConfigError(f"--num-classes={n}: must be an integer >= 2")
    s = summarize_model(cfg, n)
    if args.mac_table:
        from elimnet.bench.mac_table import candidate_mac_table, format_mac_table
        s["mac_table"] = candidate_mac_table(cfg, n)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    f = s["full"]
    print(f"{s['arch']} ({s['weights']}), {s['num_classes']} classes, {s['image_size']}px")
    print(f"{'':12}{'params':>14}{'MACs':>16}{'layers':>8}")
    print(f"{'full':12}{f['params']:>14,}{f['macs']:>16,}{f['layers']:>8}")
    print(f"{'candidate':12}{s['params']:>14,}{s['macs']:>16,}{s['layers']:>8}"
          f"   ({s['params'] / f['params']:.1%} params, {s['macs'] / f['macs']:.1%} MACs)")
    print("stages: " + "  ".join(f"{st['name']}{'' if st['kept'] else ' (removed)'}" for st in s["stages"])
          + ("  | head conv removed" if s["removed_head"] else ""))
    for step in s["steps"]:
        # nested reports (e.g. LayerPrune's per-block importance) are in --json only
        print("step: " + ", ".join(f"{k}={v}" for k, v in step.items() if not isinstance(v, dict)))
    if "mac_table" in s:
        print(format_mac_table(s["mac_table"]))
    return 0


def _reproduce_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ref", default="HEAD", help="git commit holding the published metrics/summary.json")
    p.add_argument("--summary", default="metrics/summary.json", help="this machine's summary (after make repro)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


@command("reproduce", "check this machine's metrics against the committed ones: inside their intervals, "
         "same verdict (exit 1 if not)", _reproduce_args)
def cmd_reproduce(args) -> int:
    from elimnet.report.reproduce import format_report, run_reproduce

    result = run_reproduce(args.summary, args.ref)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0 if result["reproduced"] else 1


def _register_report_commands() -> None:
    from elimnet.report import cli_commands as rc

    command("bench", rc.BENCH_HELP, rc.bench_args)(rc.cmd_bench)
    command("compare", rc.COMPARE_HELP, rc.compare_args)(rc.cmd_compare)


_register_report_commands()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elimnet", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (help_, configure, _) in COMMANDS.items():
        configure(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    return run_guarded(COMMANDS[args.command][2], args)


if __name__ == "__main__":
    sys.exit(main())
