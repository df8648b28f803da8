"""DVC stage compress: pretrained model + model.* params -> candidate model + metrics/structure.json."""
import sys

from elimnet.pipeline.common import params_from, run_stage, stage_parser
from elimnet.pipeline.compress_stage import run_compress


def main(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--pretrained", default="models/pretrained.pt")
    p.add_argument("--data", default="data/prepared")
    p.add_argument("--out", default="models/candidate_init.pt")
    p.add_argument("--structure", default="metrics/structure.json")
    args = p.parse_args(argv)
    s = run_compress(params_from(args), args.pretrained, args.data, args.out, args.structure)
    print(f"candidate: {s['candidate']['params']:,} params ({s['ratios']['params']:.1%} of full), "
          f"removed stages: {', '.join(s['removed_stages']) or 'none'}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
