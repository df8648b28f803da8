"""DVC stage params: validate params.yaml once -> resolved/<stage>.json for every other stage."""
import sys

from elimnet.pipeline.common import run_stage, stage_parser
from elimnet.pipeline.params_stage import run_params_check


def main(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--dvc-yaml", default="dvc.yaml")
    p.add_argument("--lock", default="dvc.lock", help="read only on failure: the values to put back")
    p.add_argument("--out", default="resolved")
    args = p.parse_args(argv)
    written = run_params_check(args.params or "params.yaml", args.overrides, args.dvc_yaml, args.lock, args.out)
    print(f"params valid: resolved values for {len(written)} stages in {args.out}/")


if __name__ == "__main__":
    sys.exit(run_stage(main))
