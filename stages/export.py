"""DVC stage export: model -> models/deploy/<role>/model.onnx (fp32, dynamic batch) [+ model.int8.onnx],
with parity against torch and the artifacts' own test accuracy in metrics/<role>/export.json."""
import sys

from elimnet.deploy.artifacts import PRECISIONS
from elimnet.pipeline.common import params_from, run_stage, stage_parser
from elimnet.pipeline.export_stage import run_export


def main(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--role", default="candidate")
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="data/prepared")
    p.add_argument("--out", required=True, help="folder for model.onnx and model.int8.onnx")
    p.add_argument("--metrics", required=True)
    p.add_argument("--repeat", type=int, default=0, help="repeat r of train.repeat_ids (fold r under data.folds)")
    args = p.parse_args(argv)
    r = run_export(params_from(args), args.model, args.data, args.out, args.metrics, role=args.role,
                   repeat=args.repeat)
    acc = r["accuracy"]
    parts = [f"torch acc {acc['torch']['acc']:.4f} F1 {acc['torch']['macro_f1']:.4f}"]
    for prec in PRECISIONS:
        if prec in acc:
            parts.append(f"{prec} acc {acc[prec]['acc']:.4f} F1 {acc[prec]['macro_f1']:.4f} "
                         f"({acc[prec]['delta_macro_f1']:+.4f})")
    cal = f", calibration {r['calibration']['method']}" if "calibration" in r else ""
    print(f"{args.role}: max |onnx - torch| {r['parity']['max_abs_err']:.2e}{cal}; " + "; ".join(parts))


if __name__ == "__main__":
    sys.exit(run_stage(main))
