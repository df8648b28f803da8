"""Deploy speed goals (issue 14), as ratios from one process, interleaved and repeated:

    A  Elim-2 candidate, INT8 static QDQ on ONNX Runtime  vs  eager fp32 full model   (goal >= 8x bs 1, >= 4x bs 64)
    B  ONNX Runtime fp32 full model at bs 64, % of the fp32 matmul peak measured in the same rounds (goal >= 60%)

Each round times every runner at one batch size round-robin (elimnet.bench.latency.time_runners),
then probes the peak; ratios are formed per round and reported as median [min-max] over rounds.
Models: pretrained EfficientNet-Lite0 (offline weights) with a random 4-class head (latency does
not depend on the head's values); INT8 calibrated on random batches (same graph as train images).

    nice -n 10 python benchmarks/deploy_speed.py [--arch efficientnet_lite0 --elim 2 --size 96 --rounds 5]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch


def lscpu() -> dict:
    from elimnet.bench.hardware import cpu_info, isa

    model, flags = cpu_info()
    return {"cpu": model, "isa": isa(flags)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--elim", type=int, default=2)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30, help="timed passes per runner and round (max)")
    p.add_argument("--budget-s", type=float, default=2.0, help="per runner, round and batch size")
    p.add_argument("--batch-sizes", default="1,64")
    p.add_argument("--out", default=None, help="also write the figures as JSON")
    args = p.parse_args(argv)

    from elimnet.bench.hardware import hardware_block, pct_of_peak, peak_fp32_gflops
    from elimnet.bench.latency import bench_input, time_runners, torch_runner
    from elimnet.bench.ort_timing import ort_runner
    from elimnet.bench.model_size import profile
    from elimnet.config import load_params
    from elimnet.deploy.export import export_onnx, ort_session
    from elimnet.deploy.quantize import quantize
    from elimnet.models import create_model
    from elimnet.compress.build import build_candidate

    torch.set_num_threads(args.threads)
    cfg = load_params("/nonexistent.yaml", [f"model.arch={args.arch}", f"model.elim={args.elim}",
                                            f"data.image_size={args.size}"])
    base = create_model(args.arch, pretrained=True, cache_dir=Path(cfg["data.root"]) / "weights")
    torch.manual_seed(0)
    cand, _, full = build_candidate(cfg, base, 4)
    full, cand = full.eval(), cand.eval()
    macs = {"full": profile(full, args.size)["macs"], "candidate": profile(cand, args.size)["macs"]}
    sessions = {}
    with tempfile.TemporaryDirectory() as tmp:
        calib = [bench_input(8, args.size, seed=i).numpy() for i in range(4)]
        for name, m in (("full", full), ("candidate", cand)):
            fp32 = export_onnx(m, Path(tmp) / f"{name}.onnx", args.size, name=name)
            sessions[f"ort_fp32_{name}"] = ort_session(fp32, args.threads)
            sessions[f"ort_int8_{name}"] = ort_session(quantize(fp32, Path(tmp) / f"{name}.int8.onnx", calib),
                                                       args.threads)
    eager = {n: m.to(memory_format=torch.channels_last) for n, m in (("full", full), ("candidate", cand))}
    rounds: dict = {}
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        x = bench_input(bs, args.size, seed=0)
        runners = {f"eager_{n}": torch_runner(m, x.contiguous(memory_format=torch.channels_last))
                   for n, m in eager.items()}
        runners.update({n: ort_runner(s, x) for n, s in sessions.items()})
        rounds[bs] = []
        for r in range(args.rounds):
            stats = time_runners(runners, bs, warmup=3 if r == 0 else 1, repeats=args.repeats,
                                 budget_s=args.budget_s, noisy_cv=0.2)
            peak_fp32_gflops.cache_clear()
            peak = peak_fp32_gflops(args.threads)
            rounds[bs].append({"peak_gflops": peak, **{n: s for n, s in stats.items()}})
            print(f"bs={bs} round {r + 1}/{args.rounds} done", file=sys.stderr)

    def spread(vals):
        return {"median": float(np.median(vals)), "min": float(min(vals)), "max": float(max(vals))}

    out = {"hardware": hardware_block(args.threads), "arch": args.arch, "elim": args.elim, "image_size": args.size,
           "rounds": args.rounds, "macs": macs, "per_batch_size": {}}
    for bs, rs in rounds.items():
        med = {n: spread([r[n]["median_ms"] for r in rs]) for n in rs[0] if n != "peak_gflops"}
        ratio_int8 = spread([r["eager_full"]["median_ms"] / r["ort_int8_candidate"]["median_ms"] for r in rs])
        ratio_fp32 = spread([r["eager_full"]["median_ms"] / r["ort_fp32_candidate"]["median_ms"] for r in rs])
        pct_full = spread([pct_of_peak(macs["full"], bs, r["ort_fp32_full"]["median_ms"], r["peak_gflops"])
                           for r in rs])
        pct_eager = spread([pct_of_peak(macs["full"], bs, r["eager_full"]["median_ms"], r["peak_gflops"]) for r in rs])
        noisy = sorted({n for r in rs for n, s in r.items() if n != "peak_gflops" and s.get("noisy")})
        out["per_batch_size"][bs] = {"median_ms": med, "peak_gflops": spread([r["peak_gflops"] for r in rs]),
                                     "speedup_int8_candidate_vs_eager_full": ratio_int8,
                                     "speedup_ort_fp32_candidate_vs_eager_full": ratio_fp32,
                                     "ort_fp32_full_pct_of_peak": pct_full, "eager_full_pct_of_peak": pct_eager,
                                     "noisy": noisy}
    hw = out["hardware"]
    print(f"{hw['cpu']}; flags: {', '.join(f for f, on in hw['isa'].items() if on)}; "
          f"no: {', '.join(f for f, on in hw['isa'].items() if not on) or '-'}; threads {args.threads}; "
          f"torch {hw['torch']}, onnxruntime {hw['onnxruntime']}")
    try:
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"machine load during the run: {load}")
    except OSError:
        pass
    print(f"{args.arch} (pretrained, random 4-class head) {args.size}px, Elim {args.elim}; {args.rounds} rounds; "
          f"median [min-max] over rounds")
    for bs, o in out["per_batch_size"].items():
        f = lambda s, unit="": f"{s['median']:.2f}{unit} [{s['min']:.2f}-{s['max']:.2f}]"  # noqa: E731
        print(f"bs={bs}:")
        for n, s in o["median_ms"].items():
            print(f"  {n:20} {f(s, ' ms')}")
        goal = 8 if bs == 1 else 4
        print(f"  A  INT8 ORT candidate vs eager fp32 full: {f(o['speedup_int8_candidate_vs_eager_full'], 'x')}"
              f"  (goal >= {goal}x)")
        print(f"     fp32 ORT candidate vs eager fp32 full: {f(o['speedup_ort_fp32_candidate_vs_eager_full'], 'x')}")
        print(f"  B  ORT fp32 full, % of fp32 peak ({f(o['peak_gflops'], ' GFLOP/s')}): "
              f"{f(o['ort_fp32_full_pct_of_peak'], '%')}" + ("  (goal >= 60%)" if bs >= 64 else ""))
        print(f"     eager fp32 full, % of peak: {f(o['eager_full_pct_of_peak'], '%')}")
        if o["noisy"]:
            print(f"  noisy (CV > 20% in some round): {', '.join(o['noisy'])}")
    if args.out:
        from elimnet.io import write_json

        write_json(args.out, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
