"""`elimnet bench`: latency, throughput, memory and size of a full model and its candidate, outside DVC."""
from __future__ import annotations

import argparse
import json

from elimnet.cli._shared import add_num_classes, num_classes
from elimnet.config import add_params_arguments, params_from_args

HELP = "latency, throughput, memory and size of the full model and the candidate the params describe"


def configure(p: argparse.ArgumentParser) -> None:
    add_params_arguments(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    add_num_classes(p)
    p.add_argument("--out", default=None, help="also write the result (metrics/latency.json schema) here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--csv", default=None, metavar="FILE",
                   help="also write one row per backend, batch size and model with timm's benchmark fields")


def run_bench(cfg, num_classes: int, progress: bool = False) -> dict:
    """Build full and candidate from params (random init, no download) and benchmark them."""
    from elimnet.bench.benchmark import benchmark_models
    from elimnet.compress.build import build_from_params

    candidate, steps, full = build_from_params(cfg, num_classes)
    result = benchmark_models({"full": full.eval(), "candidate": candidate.eval()}, cfg, cfg["data.image_size"],
                              reference="full", progress=progress)
    result.update(arch=cfg["model.arch"], num_classes=num_classes,
                  steps=[{"name": s["name"], **s["spec"]} for s in steps if s["name"] != "classifier"])
    return result


def format_bench(r: dict) -> str:
    """A timm-benchmark-like table: one line per backend, batch size and model."""
    lines = [f"{r.get('arch', '')} {r['image_size']}px, {r['threads']} threads, torch {r['torch']}"
             + (f", onnxruntime {r['onnxruntime']}" if r.get("onnxruntime") else "")
             + (f", allocator: {r['allocator']}" if r.get("allocator") else "")]
    hw = r.get("hardware")
    if hw:
        flags = ", ".join(f for f, on in hw["isa"].items() if on) or "none"
        peak = f", fp32 peak {hw['peak_fp32_gflops']:.0f} GFLOP/s" if hw.get("peak_fp32_gflops") else ""
        lines.append(f"{hw['cpu']} ({flags}){peak}")
    prof = r["profile"]
    for name, p in prof.items():
        lines.append(f"  {name:10} params {p['params'] / 1e6:8.3f} M  GMACs {p['macs'] / 1e9:7.3f}  "
                     f"layers {p['layers']:4d}  file {p['file_bytes'] / 2**20:7.2f} MiB")
    head = (f"{'backend':8}{'bs':>5} {'model':10}{'samples/s':>11}{'ms/step':>10}{'p10-p90 ms':>17}{'cv':>7}"
            f"{'GMAC/s':>8}{'%peak':>7}{'peak MiB':>10}{'faster':>8}")
    lines += [head, "-" * len(head)]
    for backend in r["backends"]:
        for bs, per in (r.get(backend) or {}).items():
            for name, s in per.items():
                peak = f"{s['peak_mem_mb']:10.1f}" if s.get("peak_mem_mb") is not None else f"{'–':>10}"
                red = f"{s['reduction']:+8.1%}" if "reduction" in s else f"{'':8}"
                span = f"{s['p10_ms']:.2f}-{s['p90_ms']:.2f}"
                pct = f"{s['pct_of_peak']:7.1f}" if s.get("pct_of_peak") is not None else f"{'–':>7}"
                lines.append(f"{backend:8}{bs:>5} {name:10}{s['images_per_s']:11.1f}{s['median_ms']:10.2f}"
                             f"{span:>17}{s['cv']:7.1%}{s['gmacs_per_s']:8.2f}{pct}{peak}{red}"
                             + ("  NOISY" if s.get("noisy") else ""))
    noisy = [f"{b} bs={bs} {n}" for b in r["backends"] for bs, per in (r.get(b) or {}).items()
             for n, s in per.items() if s.get("noisy")]
    if noisy:
        lines.append(f"warning: noisy timings (CV above bench.noisy_cv after the budget; machine busy?): "
                     f"{', '.join(noisy)}")
    for backend, why in r.get("unavailable", {}).items():
        lines.append(f"{backend}: not measured ({why})")
    return "\n".join(lines)


# timm's benchmark.py result fields first (its published CSVs line up), then ours.
TIMM_FIELDS = ("model", "infer_samples_per_sec", "infer_step_time", "infer_batch_size", "infer_img_size",
               "infer_gmacs", "param_count")
CSV_FIELDS = TIMM_FIELDS + ("backend", "role", "arch", "infer_p10_ms", "infer_p90_ms", "cv", "noisy", "pct_of_peak",
                            "reduction")


def bench_csv(r: dict) -> str:
    """timm units: samples/s, ms per step, GMACs per sample, params in millions (2 decimals)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
    w.writeheader()
    arch = r.get("arch", "")
    for backend in r["backends"]:
        for bs, per in (r.get(backend) or {}).items():
            for role, st in per.items():
                p = r["profile"][role]
                w.writerow({"model": f"{arch}-{role}" if arch else role,
                            "infer_samples_per_sec": round(st["images_per_s"], 2),
                            "infer_step_time": round(st["median_ms"], 3), "infer_batch_size": int(bs),
                            "infer_img_size": r["image_size"], "infer_gmacs": round(p["macs"] / 1e9, 3),
                            "param_count": round(p["params"] / 1e6, 2), "backend": backend, "role": role,
                            "arch": arch, "infer_p10_ms": round(st["p10_ms"], 3),
                            "infer_p90_ms": round(st["p90_ms"], 3), "cv": round(st["cv"], 4),
                            "noisy": st.get("noisy", ""),
                            "pct_of_peak": "" if st.get("pct_of_peak") is None else round(st["pct_of_peak"], 2),
                            "reduction": "" if "reduction" not in st else round(st["reduction"], 4)})
    return buf.getvalue()


def run(args) -> int:
    from elimnet.io import write_json, write_text

    cfg = params_from_args(args)
    r = run_bench(cfg, num_classes(args), progress=not (args.no_progress or args.json))
    if args.out:
        write_json(args.out, r)
    if args.csv:
        write_text(args.csv, bench_csv(r))
    print(json.dumps(r, indent=2) if args.json else format_bench(r))
    return 0
