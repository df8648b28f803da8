"""DVC stage finetune: an initial model + data/prepared + train.* -> best model by val macro-F1."""
import sys

from elimnet.pipeline.common import params_from, run_stage, stage_parser
from elimnet.pipeline.train_stages import run_finetune


def main(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--init", required=True, help="model file to start from")
    p.add_argument("--data", default="data/prepared")
    p.add_argument("--out", required=True)
    p.add_argument("--history", required=True, help="per-epoch CSV (dvc plots)")
    p.add_argument("--metrics", required=True, help="best-epoch JSON")
    p.add_argument("--teacher", default=None, help="finetuned teacher for train.kd (candidate only)")
    p.add_argument("--role", default="candidate")
    args = p.parse_args(argv)
    m = run_finetune(params_from(args), args.init, args.data, args.out, args.history, args.metrics,
                     args.teacher, args.role)
    print(f"{args.role}: best epoch {m['best_epoch']}, val macro-F1 {m['val_macro_f1']:.4f}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
