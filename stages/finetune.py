"""DVC stage finetune: an initial model + data/prepared + train.* -> best model by val macro-F1."""
import sys

from elimnet.pipeline.common import params_from, run_stage, stage_parser
from elimnet.train import distributed


def main(argv=None):
    p = stage_parser(__doc__)
    p.add_argument("--init", required=True, help="model file to start from")
    p.add_argument("--data", default="data/prepared")
    p.add_argument("--out", required=True)
    p.add_argument("--history", required=True, help="per-epoch CSV (dvc plots)")
    p.add_argument("--metrics", required=True, help="best-epoch JSON")
    p.add_argument("--teacher", default=None, help="finetuned teacher for train.kd (candidate only)")
    p.add_argument("--role", default="candidate")
    p.add_argument("--repeat", type=int, default=0, help="repeat r of train.repeat_ids: trains with seed + 1000 r "
                   "(on fold r under data.folds)")
    args = p.parse_args(argv)
    cfg = params_from(args)
    n = cfg["train.distributed"]
    if n > 1 and not distributed.launched():
        # Re-run this same entry point under torchrun (dvc.yaml's command stays static).
        distributed.check_world(n, cfg["train.batch_size"])
        script = sys.argv[0] if argv is None else __file__
        rc = distributed.relaunch(n, script, sys.argv[1:] if argv is None else list(argv))
        if rc:
            raise SystemExit(rc)
        return
    from elimnet.pipeline.train_stages import run_finetune  # heavy: not needed by the torchrun launcher

    m = run_finetune(cfg, args.init, args.data, args.out, args.history, args.metrics, args.teacher, args.role,
                     args.repeat)
    if m is not None:  # rank 0 (or the only process)
        print(f"{args.role} repeat {args.repeat}: best epoch {m['best_epoch']}, val macro-F1 {m['val_macro_f1']:.4f}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
