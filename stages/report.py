"""DVC stage report: metrics/*.json -> metrics/summary.json + plots/curves.png, logged to MLflow."""
import sys

from elimnet.pipeline.common import params_from, run_stage, stage_parser
from elimnet.pipeline.report_stage import run_report


def main(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--metrics-dir", default="metrics")
    p.add_argument("--out", default="metrics/summary.json")
    p.add_argument("--plot", default="plots/curves.png")
    p.add_argument("--model", default=None, help="finetuned candidate, logged to MLflow with mlflow.pytorch")
    p.add_argument("--deploy", default=None, help="the candidate's exported ONNX folder, logged and registered")
    p.add_argument("--data", default=None, help="prepared data folder, logged as the run's dataset inputs")
    args = p.parse_args(argv)
    s = run_report(params_from(args), args.metrics_dir, args.out, args.plot, args.model, args.deploy, args.data)
    r = s["ratios"]
    print(f"candidate/baseline: params {r['params']:.3f}, MACs {r['macs']:.3f}, "
          f"test macro-F1 delta {r['test_macro_f1_delta']:+.4f}")
    h = s.get("headline")
    if h and h.get("reduction") is not None:
        print(f"latency reduction on {h['backend']} at bs {h['batch_size']}: {h['reduction']:+.1%}"
              + (" (NOISY: CV above bench.noisy_cv, rerun on a quiet machine)" if h["noisy"] else ""))


if __name__ == "__main__":
    sys.exit(run_stage(main))
