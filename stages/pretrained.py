"""DVC stage pretrained: the backbone's weights (model.arch, model.weights) -> models/pretrained.pt."""
import sys

from elimnet.pipeline.common import params_from, run_stage, stage_parser
from elimnet.pipeline.pretrained_stage import run_pretrained


def main(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--out", default="models/pretrained.pt")
    args = p.parse_args(argv)
    c = run_pretrained(params_from(args), args.out)
    print(f"wrote {args.out}: {c['arch']} ({c['weights']})")


if __name__ == "__main__":
    sys.exit(run_stage(main))
