"""DVC stage search (optional): Optuna NAS over the simplified-EfficientNet space -> best model file.

Resumable: rerunning with the same search.study / search.storage continues the study up to
search.trials completed trials. The exported model flows into stages/finetune.py --init.
"""
import sys

from elimnet.pipeline.common import params_from, run_stage, stage_parser


def main(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--data", default="data/prepared")
    p.add_argument("--out", default="models/searched.pt", help="best model (the normal model-file format)")
    p.add_argument("--metrics", default="metrics/search.json", help="Pareto front and best trial (JSON)")
    p.add_argument("--trials-dir", default=None, help="per-trial model files (default: <out>_trials/)")
    args = p.parse_args(argv)
    from elimnet.search import run_search

    s = run_search(params_from(args), args.data, args.out, args.metrics, args.trials_dir)
    b = s["best"]
    print(f"search {s['study']}: {s['trials_complete']} trials ({s['trials_run_now']} now), "
          f"{len(s['pareto'])} on the Pareto front; best trial {b['trial']}: val macro-F1 "
          f"{b['val_macro_f1']:.4f}, {int(b['params']):,} params, {b['latency_ms']:.2f} ms -> {args.out}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
