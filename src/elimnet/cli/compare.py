"""`elimnet compare`: one row per model over experiments (seeds pooled, one machine's latencies), Pareto front.

The workspace and its experiments come first; commits only when asked for (`--rev`, `--all-commits`).
Prints a summary that fits 160 columns (`--wide`: every column) and writes files only under `--out`.
"""
from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from elimnet.config import add_params_arguments, params_from_args
from elimnet.errors import ConfigError, StageError

HELP = "comparison over DVC experiments or MLflow runs: seeds pooled with intervals, verdicts, Pareto front"


def configure(p: argparse.ArgumentParser) -> None:
    add_params_arguments(p)
    p.add_argument("--source", choices=["dvc", "mlflow"], default="dvc",
                   help="dvc: `dvc exp show --json` in --repo; mlflow: runs of mlflow.experiment at "
                        "mlflow.tracking_uri (MLFLOW_TRACKING_URI wins)")
    p.add_argument("--repo", default=".", help="DVC repository (source=dvc)")
    p.add_argument("--exp-show-json", default=None, metavar="FILE",
                   help="read a saved `dvc exp show --json` instead of running it")
    p.add_argument("--rev", action="append", default=[], metavar="REV",
                   help="also this commit's result and its experiments (repeatable; dvc exp show --rev)")
    p.add_argument("--all-commits", action="store_true",
                   help="also every commit's result and experiments (dvc exp show -A)")
    p.add_argument("--wide", action="store_true", help="print every column (the Markdown table)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="write compare.md, compare.csv, pareto.png and pareto.json here (default: nothing written)")
    p.add_argument("--x", default=None, metavar="BACKEND:BS",
                   help="Pareto latency axis, a backend and batch size (default: the deployed runtime at bs 1, "
                        "ort_int8:1 when the run shipped INT8, else ort:1; cpu:1 when the runs have no ORT timings)")
    p.add_argument("--y", default="test_macro_f1", help="Pareto quality axis (default test_macro_f1)")


def _axes(args) -> tuple[str | None, str]:
    """(x column, or None for the default chosen from the rows; y column)."""
    from elimnet.report.aggregate import DEPLOYED, QUALITY, canonical_key

    if args.y not in QUALITY + DEPLOYED:
        raise ConfigError(f"--y={args.y}: must be one of {', '.join(QUALITY + DEPLOYED)}")
    if args.x is None:
        return None, args.y
    m = re.fullmatch(r"([a-z0-9_]+):(\d+)", args.x)
    if not m:
        raise ConfigError(f"--x={args.x}: must be BACKEND:BATCH_SIZE, e.g. ort:1")
    return canonical_key(f"latency_{m[1]}_bs{m[2]}_ms"), args.y


def _records(args) -> tuple[list, list[str]]:
    from elimnet.report.records import dvc_exp_show, records_from_dvc, records_from_mlflow

    if args.source == "mlflow":
        from elimnet.track import tracking_uri

        cfg = params_from_args(args)
        return records_from_mlflow(tracking_uri(cfg), cfg["mlflow.experiment"])
    extra = ["-A"] if args.all_commits else [a for rev in args.rev for a in ("--rev", rev)]
    show = (json.loads(Path(args.exp_show_json).read_text()) if args.exp_show_json
            else dvc_exp_show(args.repo, extra))
    return records_from_dvc(show, repo=None if args.exp_show_json else args.repo,
                            include_commits=bool(args.all_commits or args.rev))


def run(args) -> int:
    from elimnet.report.aggregate import comparison_rows, default_x, mark_pareto
    from elimnet.report.render import axis_line, machine_notes, summary_table, to_markdown, wrap, write_files

    x, y = _axes(args)
    records, skipped = _records(args)
    if not records:
        where = "the MLflow experiment" if args.source == "mlflow" else "the workspace or its experiments"
        raise StageError(f"source={args.source}: no finished run with metrics/summary.json in {where} "
                         f"(run `make repro` or `dvc exp run`; --rev REV or --all-commits add committed results)")
    rows = comparison_rows(records)
    x, what = (x, "as asked with --x") if x else default_x(rows, records)
    front = mark_pareto(rows, x, y)
    print(wrap(axis_line(x, what, rows)))
    print(to_markdown(rows) if args.wide else summary_table(rows, x, y), end="\n" if not args.wide else "")
    lines = [] if args.wide else machine_notes(rows)
    lines.append(f"{len(records)} run{'s' * (len(records) != 1)}, {len(rows)} rows, Pareto front ({x}, {y}): "
                 + (", ".join(rows[i]["name"] for i in front) or "none"))
    if skipped:
        lines.append(f"skipped (no metrics/summary.json): {', '.join(skipped)}")
    if args.out:
        lines.append("wrote " + ", ".join(write_files(rows, args.out, x, y)))
    print("\n".join(wrap(line) for line in lines))
    return 0
