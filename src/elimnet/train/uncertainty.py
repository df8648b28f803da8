"""Uncertainty of test metrics: bootstrap CIs, the paired bootstrap of a delta, McNemar, and seed summaries.

numpy (+ scipy's t quantile) only, and no package imports, so both the evaluate/report stages and
`elimnet compare` can use it without cycles.

- Macro-F1 is the mean F1 over the classes present in the truth or the predictions of the sample
  at hand (what sklearn's f1_score does without `labels=`): a class absent from both is not a 0.
- The bootstrap is the percentile bootstrap over test images: `resamples` index draws with
  replacement from one seeded generator, so the same (seed, resamples, predictions) give the same CI.
- The paired bootstrap draws the same images for both models, so the CI of the delta excludes the
  part of the noise both models share (which images happen to be in the test split).
- The two-level bootstrap (repeats of the training, then test images) adds the training noise: one
  run is one draw of a chaotic process, and a CI over images alone is too narrow for a verdict that
  must hold on another machine (Bouthillier et al., "Accounting for Variance in Machine Learning
  Benchmarks", MLSys 2021). With one repeat there is nothing to resample: no verdict.
- With K-fold cross-validation every image is tested once, by the fold's models: the metrics are the
  out-of-fold pooled ones, and the two-level bootstrap resamples folds, then images within each fold.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

LEVEL = 0.95
RESAMPLES = 1000  # the default of `train.bootstrap`; the issue asks for at least 1000


def _arrays(*ys) -> list[np.ndarray]:
    out = [np.asarray(y, dtype=np.int64).ravel() for y in ys]
    if any(len(y) != len(out[0]) for y in out):
        raise ValueError(f"prediction arrays differ in length: {[len(y) for y in out]}")
    if len(out[0]) == 0:
        raise ValueError("cannot compute metrics over zero images")
    return out


def _confusions(y_true: np.ndarray, y_pred: np.ndarray, k: int, idx: np.ndarray) -> np.ndarray:
    """(B, k, k) confusion matrices (rows: truth) of the B resamples in `idx` (B, n)."""
    cell = y_true * k + y_pred
    b = idx.shape[0]
    flat = (np.arange(b)[:, None] * (k * k) + cell[idx]).ravel()
    return np.bincount(flat, minlength=b * k * k).reshape(b, k, k)


def _acc_f1(conf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 (classes present in truth or predictions) of (B, k, k) confusions."""
    tp = np.diagonal(conf, axis1=1, axis2=2).astype(np.float64)
    truth, pred = conf.sum(2), conf.sum(1)
    n = truth.sum(1)
    present = (truth + pred) > 0
    denom = truth + pred  # 2tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    macro = (f1 * present).sum(1) / np.maximum(present.sum(1), 1)
    return tp.sum(1) / n, macro


def accuracy_macro_f1(y_true, y_pred) -> tuple[float, float]:
    t, p = _arrays(y_true, y_pred)
    k = int(max(t.max(), p.max())) + 1
    acc, f1 = _acc_f1(_confusions(t, p, k, np.arange(len(t))[None, :]))
    return float(acc[0]), float(f1[0])


def _draws(n: int, resamples: int, seed: int) -> np.ndarray:
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: must be >= 1")
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def _percentile_ci(values: np.ndarray, level: float) -> list[float]:
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def bootstrap_ci(y_true, y_pred, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict:
    """Percentile bootstrap CIs over images: {"acc": [lo, hi], "macro_f1": [lo, hi]}."""
    t, p = _arrays(y_true, y_pred)
    k = int(max(t.max(), p.max())) + 1
    acc, f1 = _acc_f1(_confusions(t, p, k, _draws(len(t), resamples, seed)))
    return {"acc": _percentile_ci(acc, level), "macro_f1": _percentile_ci(f1, level)}


def paired_bootstrap(y_true, pred_a, pred_b, resamples: int = RESAMPLES, seed: int = 0,
                     level: float = LEVEL) -> dict:
    """Delta b - a on the same images, and its CI from resampling the images both models saw.

    Returns {"delta_acc", "delta_acc_ci", "delta_macro_f1", "delta_macro_f1_ci"}.
    """
    t, a, b = _arrays(y_true, pred_a, pred_b)
    k = int(max(t.max(), a.max(), b.max())) + 1
    full = np.arange(len(t))[None, :]
    idx = _draws(len(t), resamples, seed)
    (acc_a0, f1_a0), (acc_b0, f1_b0) = _acc_f1(_confusions(t, a, k, full)), _acc_f1(_confusions(t, b, k, full))
    acc_a, f1_a = _acc_f1(_confusions(t, a, k, idx))
    acc_b, f1_b = _acc_f1(_confusions(t, b, k, idx))
    return {"delta_acc": float(acc_b0[0] - acc_a0[0]), "delta_acc_ci": _percentile_ci(acc_b - acc_a, level),
            "delta_macro_f1": float(f1_b0[0] - f1_a0[0]), "delta_macro_f1_ci": _percentile_ci(f1_b - f1_a, level)}


def _repeat_predictions(y_true, preds) -> tuple[np.ndarray, np.ndarray]:
    """y (n,) and predictions (R, n) as int arrays; a single run (n,) counts as R = 1."""
    t = _arrays(y_true)[0]
    p = np.atleast_2d(np.asarray(preds, dtype=np.int64))
    if p.ndim != 2 or p.shape[1] != len(t) or p.shape[0] == 0:
        raise ValueError(f"predictions of shape {p.shape}: must be (repeats, {len(t)}), one row per repeat")
    return t, p


def _repeat_scores(t: np.ndarray, preds: np.ndarray, k: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 of every repeat on every image resample: two (R, B) arrays."""
    per = [_acc_f1(_confusions(t, p, k, idx)) for p in preds]
    return np.stack([a for a, _ in per]), np.stack([f for _, f in per])


def _repeat_draws(repeats: int, resamples: int, seed: int) -> np.ndarray:
    """(B, R) repeat indices drawn with replacement; a generator apart from the image draws', so that with
    identical repeats the image draws (and the CI) equal paired_bootstrap's for the same seed."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 1]))
    return rng.integers(0, repeats, size=(resamples, repeats))


def _mean_over_drawn(scores: np.ndarray, rep: np.ndarray) -> np.ndarray:
    """Mean over the drawn repeats of each resample: scores (R, B), rep (B, R) -> (B,)."""
    return scores[rep, np.arange(scores.shape[1])[:, None]].mean(1)


def two_level_bootstrap(y_true, preds_a, preds_b, resamples: int = RESAMPLES, seed: int = 0,
                        level: float = LEVEL) -> dict:
    """Delta b - a of macro-F1 and accuracy, mean over R training repeats on a shared test set, and its CI.

    Each resample draws R (baseline, candidate) repeat pairs with replacement (repeat r of both roles
    shares its seed, and the candidate may distil from that baseline) and n test images with
    replacement (the same images for every repeat and both models: paired by image). The CI is the
    percentile interval of the resampled mean deltas, so it holds both noises: the training run and
    the test images. `preds_*` are (R, n) arrays, row r = repeat r.

    R = 1: the images alone are resampled (paired_bootstrap) and "verdict" is None, with "note"
    saying why: training variance was not measured.
    """
    t, a = _repeat_predictions(y_true, preds_a)
    _, b = _repeat_predictions(t, preds_b)
    if a.shape != b.shape:
        raise ValueError(f"baseline and candidate differ in repeats: {a.shape[0]} vs {b.shape[0]}")
    n_rep, k = a.shape[0], int(max(t.max(), a.max(), b.max())) + 1
    full = np.arange(len(t))[None, :]
    acc_a0, f1_a0 = _repeat_scores(t, a, k, full)
    acc_b0, f1_b0 = _repeat_scores(t, b, k, full)
    idx = _draws(len(t), resamples, seed)
    acc_a, f1_a = _repeat_scores(t, a, k, idx)
    acc_b, f1_b = _repeat_scores(t, b, k, idx)
    rep = _repeat_draws(n_rep, resamples, seed)
    d_f1, d_acc = _mean_over_drawn(f1_b - f1_a, rep), _mean_over_drawn(acc_b - acc_a, rep)
    ci = _percentile_ci(d_f1, level)
    out = {"repeats": n_rep, "delta_macro_f1": float((f1_b0 - f1_a0).mean()), "delta_macro_f1_ci": ci,
           "delta_acc": float((acc_b0 - acc_a0).mean()), "delta_acc_ci": _percentile_ci(d_acc, level),
           "per_repeat_delta_macro_f1": (f1_b0 - f1_a0)[:, 0].tolist(),
           "verdict": verdict(ci) if n_rep > 1 else None}
    if n_rep == 1:
        out["note"] = NO_VERDICT_NOTE
    return out


def two_level_ci(y_true, preds, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict:
    """One model's mean macro-F1 and accuracy over R repeats with the two-level percentile CIs (as above)."""
    t, p = _repeat_predictions(y_true, preds)
    k = int(max(t.max(), p.max())) + 1
    acc, f1 = _repeat_scores(t, p, k, _draws(len(t), resamples, seed))
    rep = _repeat_draws(p.shape[0], resamples, seed)
    return {"acc": _percentile_ci(_mean_over_drawn(acc, rep), level),
            "macro_f1": _percentile_ci(_mean_over_drawn(f1, rep), level)}


def out_of_fold_bootstrap(y_parts, pred_a_parts, pred_b_parts, resamples: int = RESAMPLES, seed: int = 0,
                          level: float = LEVEL) -> dict:
    """k-fold cross-validation: every image is tested once, by the models that did not train on it. The
    folds' predictions are pooled into one test set of all images and the delta is paired-bootstrapped
    over it; the models differ from fold to fold, so part of the training noise is inside the CI."""
    y, a, b = (np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
               for parts in (y_parts, pred_a_parts, pred_b_parts))
    out = paired_bootstrap(y, a, b, resamples, seed, level)
    return {**out, "folds": len(y_parts), "images": len(y), "verdict": verdict(out["delta_macro_f1_ci"])}


def _fold_arrays(y_parts, *pred_parts) -> tuple[list[np.ndarray], list[list[np.ndarray]], int]:
    """Per fold: truth and each model's predictions as int arrays (checked), and the class count k."""
    ys = [_arrays(y)[0] for y in y_parts]
    preds = [[_arrays(y, p)[1] for y, p in zip(ys, parts, strict=True)] for parts in pred_parts]
    if not ys:
        raise ValueError("no folds")
    k = int(max(max(int(a.max()) for a in arrs) for arrs in (ys, *preds))) + 1
    return ys, preds, k


def _fold_draws(sizes: list[int], resamples: int, seed: int) -> list[np.ndarray]:
    """Per resample, positions into the folds' concatenation: K folds drawn with replacement, then each drawn
    fold's images with replacement (a fold = its models and its test images)."""
    if resamples < 1:
        raise ValueError(f"resamples={resamples}: must be >= 1")
    rng = np.random.default_rng(seed)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    draws = []
    for _ in range(resamples):
        picked = rng.integers(0, len(sizes), len(sizes))
        draws.append(np.concatenate([starts[f] + rng.integers(0, sizes[f], sizes[f]) for f in picked]))
    return draws


def _pooled_scores(y: np.ndarray, pred: np.ndarray, k: int, draws: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy and macro-F1 of the pooled predictions on every drawn position set: two (B,) arrays."""
    conf = np.stack([np.bincount(y[d] * k + pred[d], minlength=k * k).reshape(k, k) for d in draws])
    return _acc_f1(conf)


def folds_two_level_bootstrap(y_parts, pred_a_parts, pred_b_parts, resamples: int = RESAMPLES, seed: int = 0,
                              level: float = LEVEL) -> dict:
    """K-fold cross-validation, delta b - a with the training noise in: fold f's models tested on fold f's
    images, every image once. The delta is the out-of-fold pooled one (all images); its CI resamples folds,
    then images within each drawn fold, paired by image, and scores the pooled draw.

    The same keys as two_level_bootstrap ("folds" for "repeats"; per_repeat_delta_macro_f1 = per fold)."""
    ys, (a_parts, b_parts), k = _fold_arrays(y_parts, pred_a_parts, pred_b_parts)
    y, a, b = np.concatenate(ys), np.concatenate(a_parts), np.concatenate(b_parts)
    full = [np.arange(len(y))]
    (acc_a0, f1_a0), (acc_b0, f1_b0) = _pooled_scores(y, a, k, full), _pooled_scores(y, b, k, full)
    draws = _fold_draws([len(t) for t in ys], resamples, seed)
    (acc_a, f1_a), (acc_b, f1_b) = _pooled_scores(y, a, k, draws), _pooled_scores(y, b, k, draws)
    ci = _percentile_ci(f1_b - f1_a, level)
    per_fold = [accuracy_macro_f1(t, pb)[1] - accuracy_macro_f1(t, pa)[1]
                for t, pa, pb in zip(ys, a_parts, b_parts)]
    return {"folds": len(ys), "delta_macro_f1": float(f1_b0[0] - f1_a0[0]), "delta_macro_f1_ci": ci,
            "delta_acc": float(acc_b0[0] - acc_a0[0]), "delta_acc_ci": _percentile_ci(acc_b - acc_a, level),
            "per_repeat_delta_macro_f1": per_fold, "verdict": verdict(ci)}


def folds_two_level_ci(y_parts, pred_parts, resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict:
    """One model's out-of-fold pooled accuracy and macro-F1 with CIs from the same draws as
    folds_two_level_bootstrap: {"acc", "macro_f1", "acc_ci", "macro_f1_ci"}."""
    ys, (parts,), k = _fold_arrays(y_parts, pred_parts)
    y, p = np.concatenate(ys), np.concatenate(parts)
    acc0, f10 = _pooled_scores(y, p, k, [np.arange(len(y))])
    acc, f1 = _pooled_scores(y, p, k, _fold_draws([len(t) for t in ys], resamples, seed))
    return {"acc": float(acc0[0]), "macro_f1": float(f10[0]), "acc_ci": _percentile_ci(acc, level),
            "macro_f1_ci": _percentile_ci(f1, level)}


def mcnemar_table(y_true, pred_a, pred_b) -> tuple[int, int]:
    """(a right and b wrong, a wrong and b right): the discordant cells McNemar's test uses."""
    t, a, b = _arrays(y_true, pred_a, pred_b)
    ra, rb = a == t, b == t
    return int((ra & ~rb).sum()), int((~ra & rb).sum())


def mcnemar_exact(n01: int, n10: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of min(n01, n10) in n01 + n10 trials at 1/2.

    Equal accuracy is the null hypothesis; no discordant pair gives p = 1.
    """
    n = n01 + n10
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(n01, n10) + 1)) / 2 ** n
    return float(min(1.0, 2 * tail))


def mcnemar_p(y_true, pred_a, pred_b) -> float:
    return mcnemar_exact(*mcnemar_table(y_true, pred_a, pred_b))


# ----------------------------------------------------------------------------- across seeds
def t_quantile(n: int, level: float = LEVEL) -> float:
    """Two-sided Student t quantile for n values (n - 1 degrees of freedom)."""
    from scipy.stats import t

    return float(t.ppf((1 + level) / 2, n - 1))


def seed_summary(values: Sequence[float], level: float = LEVEL) -> dict:
    """n, mean, sample sd and the t-interval of the mean; sd and CI are None for a single value."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(v) == 0:
        return {"n": 0, "mean": None, "sd": None, "ci": None}
    if len(v) == 1:
        return {"n": 1, "mean": float(v[0]), "sd": None, "ci": None}
    mean, sd = float(v.mean()), float(v.std(ddof=1))
    half = t_quantile(len(v), level) * sd / math.sqrt(len(v))
    return {"n": len(v), "mean": mean, "sd": sd, "ci": [mean - half, mean + half]}


def combined_ci(values: Sequence[float], boot_cis: Sequence[Sequence[float] | None],
                level: float = LEVEL) -> list[float] | None:
    """95% CI of a test metric's (or paired delta's) mean over seeds.

    Two noises add up: training (seed to seed: the t-interval of the values) and the test split
    (the mean half-width of the per-seed bootstrap CIs; on a fixed test split every seed sees the same
    images, so that noise does not average out). Their half-widths add in quadrature around the mean;
    where the seed also redraws the split, part of the split noise is in the seed spread already and
    the interval errs on the wide side. With one seed it is that seed's bootstrap CI; None when
    neither is known.
    """
    s = seed_summary(values, level)
    if s["n"] == 0:
        return None
    boot = [(c[1] - c[0]) / 2 for c in boot_cis if c is not None and len(c) == 2]
    h_boot = float(np.mean(boot)) if boot else None
    if s["n"] == 1:
        known = [list(c) for c in boot_cis if c is not None and len(c) == 2]
        return known[0] if known else None
    h_seed = (s["ci"][1] - s["ci"][0]) / 2
    half = math.hypot(h_seed, h_boot or 0.0)
    return [s["mean"] - half, s["mean"] + half]


NO_VERDICT_NOTE = "training variance not measured (train.repeats=1)"


def verdict(ci: Sequence[float] | None) -> str | None:
    """'loss' / 'gain' when the whole 95% interval is below / above 0, else 'no loss detected'.

    Never 'as accurate': an interval that contains 0 only says a loss wasn't detected.
    """
    if ci is None:
        return None
    lo, hi = ci
    return "loss" if hi < 0 else "gain" if lo > 0 else "no loss detected"
