"""DVC stage prepare: data source -> data/prepared/{train,val,test}.pt + metrics/data.json."""
import sys

from elimnet.pipeline.common import params_from, run_stage, stage_parser
from elimnet.pipeline.prepare_stage import run_prepare


def main(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--out", default="data/prepared")
    p.add_argument("--metrics", default="metrics/data.json")
    args = p.parse_args(argv)
    m = run_prepare(params_from(args), args.out, args.metrics)
    print(f"prepared {m['source']}: " + ", ".join(f"{s} {v['size']}" for s, v in m["splits"].items())
          + f" ({m['skipped_total']} skipped)")


if __name__ == "__main__":
    sys.exit(run_stage(main))
