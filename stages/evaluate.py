"""DVC stage evaluate: model + test split -> loss, accuracy, macro-F1, confusion (predictions CSV)."""
import sys

from elimnet.pipeline.common import params_from, run_stage, stage_parser
from elimnet.pipeline.train_stages import run_evaluate


def main(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="data/prepared")
    p.add_argument("--out", required=True)
    p.add_argument("--predictions", required=True)
    p.add_argument("--repeat", type=int, default=0, help="repeat r of train.repeat_ids (fold r under data.folds)")
    args = p.parse_args(argv)
    m = run_evaluate(params_from(args), args.model, args.data, args.out, args.predictions, repeat=args.repeat)
    print(f"{args.model}: test acc {m['test_acc']:.4f}, macro-F1 {m['test_macro_f1']:.4f}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
