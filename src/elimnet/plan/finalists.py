"""The best screened candidates under the budget, finetuned with the full recipe over repeats.

Each repeat r uses seed + r for the new layers' init and the training order, as `dvc exp run -S
seed=...` would. The finetuned model ships as the deployed file (INT8 calibrated on training images)
and its test macro-F1 is measured on that file through ONNX Runtime, with the test-image bootstrap
interval; repeats combine as in the main report (train/uncertainty.py combined_ci). Results are kept
in the study (a user attribute per candidate and repeat), so a rerun finetunes nothing twice.
"""
from __future__ import annotations

import hashlib
import json

from elimnet.data.tensors import TensorSplit
from elimnet.plan.study import PlanContext
from elimnet.train import uncertainty


def pareto(points: list[dict], better: str = "score", cost: str = "latency_ms") -> list[dict]:
    """The points no other point beats on both `better` (higher) and `cost` (lower), by cost."""
    def dominated(p):
        return any(q[better] >= p[better] and q[cost] <= p[cost] and (q[better], q[cost]) != (p[better], p[cost])
                   for q in points)
    return sorted((p for p in points if not dominated(p)), key=lambda p: p[cost])


def screened(study, within_budget) -> list[dict]:
    """Complete trials under the budget, one per candidate (the first trial of each), best proxy first."""
    from optuna.trial import TrialState

    seen, rows = set(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        a = t.user_attrs
        if a["name"] in seen or not within_budget(a):
            continue
        seen.add(a["name"])
        rows.append({"trial": t.number, "score": t.values[0], **a})
    return sorted(rows, key=lambda r: (-r["score"], r["latency_ms"], r["trial"]))


def pick_finalists(rows: list[dict], count: int) -> list[dict]:
    """The proxy's Pareto front under the budget, most accurate first, cut to `count`."""
    return sorted(pareto(rows), key=lambda r: (-r["score"], r["latency_ms"]))[:count]


def _result_key(overrides: dict, repeat: int, ctx: PlanContext) -> str:
    recipe = {k: v for k, v in ctx.cfg.flat().items() if k.startswith("train.") or k == "seed"}
    text = json.dumps({"o": overrides, "r": repeat, "recipe": recipe}, sort_keys=True, default=str)
    return "final:" + hashlib.sha256(text.encode()).hexdigest()[:20]


def finetune_once(ctx: PlanContext, overrides: dict, repeat: int, test: TensorSplit, train: TensorSplit,
                  val: TensorSplit, progress: bool) -> dict:
    """One full-recipe finetune of a candidate: its deployed file's test predictions and bootstrap CI."""
    from elimnet.deploy.evaluate import evaluate_onnx
    from elimnet.plan.deployed import deployed_file
    from elimnet.train.finetune import TrainRecipe, finetune

    cfg = ctx.cfg.replace(**overrides, seed=ctx.cfg["seed"] + repeat)
    model, _ = ctx.build(cfg)
    recipe = TrainRecipe.from_config(cfg)
    recipe.kd_alpha = 0.0  # the plan compares compressions; distillation is a separate choice
    result = finetune(model, train, val, recipe, mean=ctx.mean, std=ctx.std, num_classes=ctx.num_classes,
                      progress=progress, desc=f"finetune r{repeat}")
    model.load_state_dict(result.best_state)
    path = deployed_file(model, overrides["deploy.precision"], ctx.workdir, f"final_r{repeat}", ctx.image_size,
                         ctx.calibration)
    m = evaluate_onnx(path, test, ctx.num_classes, normalize=ctx.normalize, threads=ctx.threads)
    for f in ctx.workdir.glob(f"final_r{repeat}.*onnx"):
        f.unlink()
    ci = uncertainty.bootstrap_ci(test.labels.tolist(), m["y_pred"], ctx.cfg["train.bootstrap"], cfg["seed"])
    return {"test_macro_f1": m["macro_f1"], "ci": ci["macro_f1"], "y_pred": m["y_pred"]}


def evaluate_candidate(ctx: PlanContext, study, overrides: dict, repeats: int, splits: dict,
                       progress: bool = True, reference: list[dict] | None = None) -> dict:
    """Mean test macro-F1 over repeats with its combined interval (and the paired delta to `reference`)."""
    runs = []
    for r in range(repeats):
        key = _result_key(overrides, r, ctx)
        if key not in study.user_attrs:
            study.set_user_attr(key, finetune_once(ctx, overrides, r, splits["test"], splits["train"],
                                                   splits["val"], progress))
        runs.append(study.user_attrs[key])
    f1s = [x["test_macro_f1"] for x in runs]
    out = {"test_macro_f1": sum(f1s) / len(f1s),
           "test_macro_f1_ci": uncertainty.combined_ci(f1s, [x["ci"] for x in runs]),
           "test_macro_f1_runs": f1s, "_runs": runs}
    if reference is not None:
        y = splits["test"].labels.tolist()
        deltas = [uncertainty.paired_bootstrap(y, ref["y_pred"], run["y_pred"], ctx.cfg["train.bootstrap"],
                                               ctx.cfg["seed"] + r)
                  for r, (ref, run) in enumerate(zip(reference, runs))]
        ci = uncertainty.combined_ci([d["delta_macro_f1"] for d in deltas], [d["delta_macro_f1_ci"] for d in deltas])
        out.update(delta_macro_f1_ci=ci, verdict=uncertainty.verdict(ci))
    return out

