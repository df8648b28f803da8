"""From a finished study to the plan: the reference, the finalists' full finetunes, the front, the choice."""
from __future__ import annotations

from elimnet.plan.deployed import RUNTIME
from elimnet.plan.finalists import evaluate_candidate, pareto, pick_finalists, screened
from elimnet.plan.proxy import imprinted
from elimnet.plan.report import entry
from elimnet.plan.space import reproduce_command
from elimnet.plan.study import PlanContext, all_off_params, measure


def reference_row(ctx: PlanContext) -> dict:
    """The full fp32 model: its size and its deployed latency (from the cache after the first run)."""
    from elimnet.bench.model_size import count_macs
    from elimnet.models import count_params

    full = ctx.build(ctx.cfg.replace(**all_off_params()))[1]
    _, timing, _ = measure(ctx, imprinted(full, ctx.proxy_train, ctx.normalize, ctx.num_classes), "fp32", "full",
                           need_file=False)
    for f in ctx.workdir.glob("full.*onnx"):
        f.unlink()
    return {"name": "full", "params": count_params(full), "macs": count_macs(full, ctx.image_size),
            "latency_ms": timing["latency_ms"], "runtime": RUNTIME, "precision": "fp32"}


def trial_counts(study) -> dict:
    from optuna.trial import TrialState

    return {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,)))
            for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}


def _public_url(storage: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(storage).render_as_string(hide_password=True)


def summarize(ctx: PlanContext, study, args, splits: dict, storage: str) -> dict:
    from elimnet.bench.hardware import cpu_info

    ref = reference_row(ctx)
    if args.budget is not None:  # the paired ratio: both timed in the same rounds
        budget_ms, rule = args.budget * ref["latency_ms"], f"--budget {args.budget:g} of the full model"
        within = lambda a: a["ratio"] <= args.budget  # noqa: E731
    else:
        budget_ms, rule = args.budget_ms, f"--budget-ms {args.budget_ms:g}"
        within = lambda a: a["latency_ms"] <= budget_ms  # noqa: E731
    rows = screened(study, within)
    finalists = pick_finalists(rows, args.finalists)
    ref_eval = evaluate_candidate(ctx, study, all_off_params(), args.repeats, splits, args.progress)
    ref.update({k: v for k, v in ref_eval.items() if not k.startswith("_")})
    for row in finalists:
        result = evaluate_candidate(ctx, study, row["overrides"], args.repeats, splits, args.progress,
                                    reference=ref_eval["_runs"])
        row.update({k: v for k, v in result.items() if not k.startswith("_")})
    front = pareto(finalists, better="test_macro_f1") if finalists else []
    from elimnet.compress.criteria import spearman

    # How well the proxy ranked what the full recipe then measured (nan below 2 finalists or on ties).
    rank = spearman([r["score"] for r in finalists], [r["test_macro_f1"] for r in finalists])
    plan = {"budget_ms": budget_ms, "budget_rule": rule, "batch_size": ctx.batch_size, "threads": ctx.threads,
            "reference": ref, "front": [entry(r, RUNTIME) for r in front], "choice": None,
            "screened": [{"trial": r["trial"], "name": r["name"], "precision": r["overrides"]["deploy.precision"],
                          "latency_ms": r["latency_ms"], "proxy_macro_f1": r["score"]} for r in rows],
            "finalists": [entry(r, RUNTIME) for r in finalists], "repeats": args.repeats,
            "proxy": {"method": "imprint", "train_images": len(ctx.proxy_train), "val_images": len(ctx.proxy_val),
                      "spearman_vs_test_macro_f1": None if rank != rank else rank, "candidates": len(finalists)},
            "study": study.study_name, "storage": _public_url(storage), "trials": trial_counts(study),
            "hardware": {"cpu": cpu_info()[0], "fingerprint": ctx.hardware}}
    if finalists:
        best = max(finalists, key=lambda r: (r["test_macro_f1"], -r["latency_ms"]))
        plan["choice"] = {**entry(best, RUNTIME), "command": reproduce_command(best["overrides"])}
    return plan
