"""DVC stage benchmark: latency of baseline and candidate per batch size (CPU; CUDA when present)."""
import sys

from elimnet.pipeline.benchmark_stage import run_benchmark
from elimnet.pipeline.common import params_from, run_stage, stage_parser


def main(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--baseline", default="models/baseline.pt")
    p.add_argument("--candidate", default="models/candidate.pt")
    p.add_argument("--out", default="metrics/latency.json")
    args = p.parse_args(argv)
    r = run_benchmark(params_from(args), args.baseline, args.candidate, args.out)
    for bs, s in r["cpu"].items():
        print(f"cpu bs={bs}: baseline {s['baseline']['median_ms']:.2f} ms, candidate {s['candidate']['median_ms']:.2f}"
              f" ms ({s['candidate']['reduction']:+.1%} reduction)")


if __name__ == "__main__":
    sys.exit(run_stage(main))
