"""`elimnet exp`: `dvc exp show` at a readable width, with the headline metrics and the params that vary.

`dvc exp show` alone is ~2,000 columns wide (every param and every dependency's md5), and with
`--only-changed` at 160 columns every cell collapses to "…". This asks DVC for the rows first
(`--json`), picks the params that differ between them, keeps as many as fit `--width` next to the
experiment name and metrics/headline.json's headline numbers, and names the ones left out.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

PASSES_UNKNOWN_ARGS = True  # the rest of the command line is dvc exp show's
HELP = "`dvc exp show` in <= 160 columns: headline metrics and the params that differ between experiments"
# Headline metrics under the names of every release: faster_bs1 (fraction), faster_ort_bs001_pct (percent).
# DVC matches with re.match, so each name is anchored at its end.
# A name shared with another metrics file is shown as `metrics/headline.json:<name>`.
HEADLINE = (r"(Experiment|(metrics/headline\.json:)?(params_M|mmacs|test_macro_f1|delta_f1|verdict|faster_bs(1|64)"
            r"|speedup_bs0*(1|64)(_pct)?|faster_(ort|ort_int8)_bs0*(1|64)_pct))$")
_HEADLINE_COLUMNS, _CELL = 7, 8  # how many of them a row shows, and the widest number DVC prints (0.037408)
_PAD = 3  # DVC's table puts 3 spaces between columns
# Which varying params come first when not all fit: what the experiments are about, then the settings.
_PARAM_ORDER = ("seed", "model.", "train.", "data.", "deploy.", "bench.")


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", default=".", help="DVC repository")
    p.add_argument("--width", type=int, default=160, help="table width in columns (default 160)")
    p.epilog = "Other options go to `dvc exp show`, e.g. -A, --rev REV, -n 5, --sort-by test_macro_f1, --md."


def varying_params(show: list[dict]) -> dict[str, int]:
    """Params whose value differs between the rows of `dvc exp show --json`, with their column width
    (the experiment-defining ones first: _PARAM_ORDER)."""
    from elimnet.config import flatten
    from elimnet.report.records import dvc_entries

    rows = [flatten(((e.get("data") or {}).get("params") or {}).get("params.yaml", {}).get("data") or {})
            for _, e in dvc_entries(show, include_commits=True)]
    keys = sorted({k for r in rows for k in r},
                  key=lambda k: (next((i for i, p in enumerate(_PARAM_ORDER) if k.startswith(p)), 99), k))
    out = {}
    for k in keys:
        values = {json.dumps(r.get(k), default=str) for r in rows}
        if len(values) > 1:
            out[k] = max(len(k), *(len(v) for v in values))
    return out


def columns_that_fit(show: list[dict], width: int) -> tuple[list[str], list[str]]:
    """(params shown, params left out): varying params in order while the table fits `width`."""
    from elimnet.report.records import dvc_entries

    names = [n for n, _ in dvc_entries(show, include_commits=True)]
    used = 2 + max([len("Experiment"), *(len(n) + 6 for n in names)]) + _HEADLINE_COLUMNS * (_CELL + _PAD)
    shown, left = [], []
    for key, w in varying_params(show).items():
        if not left and used + w + _PAD <= width:
            shown.append(key)
            used += w + _PAD
        else:
            left.append(key)
    return shown, left


def run(args) -> int:
    from elimnet.errors import ConfigError
    from elimnet.report.records import dvc_exp_show

    if args.width < 80:
        raise ConfigError(f"--width={args.width}: must be at least 80 columns")
    shown, left = columns_that_fit(dvc_exp_show(args.repo, [a for a in args.unknown if a != "--md"]), args.width)
    keep = "|".join([HEADLINE] + [re.escape(k) + "$" for k in shown])
    env = dict(os.environ, COLUMNS=str(args.width), DVC_NO_ANALYTICS=os.environ.get("DVC_NO_ANALYTICS", "1"))
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--no-pager", "--drop", ".*", "--keep", keep, *args.unknown]
    code = subprocess.run(cmd, cwd=args.repo, env=env).returncode
    if left:
        from elimnet.report.render import wrap

        names = ", ".join(left[:8]) + (", …" if len(left) > 8 else "")
        print(wrap(f"{len(left)} more params differ ({names}): `dvc exp show --only-changed` shows them", args.width))
    return code
