"""`elimnet summary`: params, MACs, layers and kept/removed stages of a candidate, without data."""
from __future__ import annotations

import argparse
import json

from elimnet.cli._shared import add_num_classes, num_classes
from elimnet.config import add_params_arguments, params_from_args

HELP = "params, MACs, layers and kept/removed stages of a candidate (no data, no download)"


def configure(p: argparse.ArgumentParser) -> None:
    add_params_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_num_classes(p)
    p.add_argument("--mac-table", action="store_true",
                   help="also print the candidate's per-operation MACs and filters (seed 002, Table 4 form)")


def summarize_model(cfg, num_classes: int) -> dict:
    """Sizes of the full model and the candidate the params describe: random init, no data, no download."""
    from elimnet.compress.build import build_from_params, describe
    from elimnet.bench.block_table import LatencyCache
    from elimnet.models import get_spec

    arch, size = cfg["model.arch"], cfg["data.image_size"]
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


def format_summary(s: dict) -> str:
    f = s["full"]
    lines = [f"{s['arch']} ({s['weights']}), {s['num_classes']} classes, {s['image_size']}px",
             f"{'':12}{'params':>14}{'MACs':>16}{'layers':>8}",
             f"{'full':12}{f['params']:>14,}{f['macs']:>16,}{f['layers']:>8}",
             f"{'candidate':12}{s['params']:>14,}{s['macs']:>16,}{s['layers']:>8}"
             f"   ({s['params'] / f['params']:.1%} params, {s['macs'] / f['macs']:.1%} MACs)",
             "stages: " + "  ".join(f"{st['name']}{'' if st['kept'] else ' (removed)'}" for st in s["stages"])
             + ("  | head conv removed" if s["removed_head"] else "")]
    for step in s["steps"]:
        # nested reports (e.g. LayerPrune's per-block importance) are in --json only
        lines.append("step: " + ", ".join(f"{k}={v}" for k, v in step.items() if not isinstance(v, dict)))
    return "\n".join(lines)


def run(args) -> int:
    cfg = params_from_args(args)
    n = num_classes(args)
    s = summarize_model(cfg, n)
    if args.mac_table:
        from elimnet.bench.mac_table import mac_table
        from elimnet.compress.build import build_from_params  # bench/ builds nothing from params

        s["mac_table"] = mac_table(build_from_params(cfg, n)[0], cfg["data.image_size"])
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(format_summary(s))
    if "mac_table" in s:
        from elimnet.bench.mac_table import format_mac_table

        print(format_mac_table(s["mac_table"]))
    return 0
