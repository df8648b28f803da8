"""Uncertainty of test metrics: bootstrap CIs, paired deltas, McNemar, seed summaries, verdicts."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from elimnet.train import uncertainty
from elimnet.train.metrics import classification_metrics, per_class_f1, support, warn_small_classes


def noisy(n=300, k=3, err=0.3, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    p = np.where(rng.random(n) < err, rng.integers(0, k, n), y)
    return y, p


# ----------------------------------------------------------------------------- macro-F1 over present classes
def test_macro_f1_counts_only_classes_present_in_truth_or_predictions():
    y, p = [0, 0, 1, 1, 2], [0, 1, 1, 1, 2]  # class 3 of 4 is absent from both
    f1 = [2 / 3, 0.8, 1.0]
    assert classification_metrics(y, p, 4)["macro_f1"] == pytest.approx(sum(f1) / 3)  # not sum / 4
    assert uncertainty.accuracy_macro_f1(y, p) == pytest.approx((0.8, sum(f1) / 3))
    assert per_class_f1(y, p, 4)[:3] == pytest.approx(f1) and per_class_f1(y, p, 4)[3] is None
    # a class only predicted (never true) counts, with F1 0
    assert classification_metrics([0, 0], [0, 1], 3)["macro_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert support(y, 4) == [2, 2, 1, 0]


def test_vectorised_metrics_match_sklearn():
    for seed in range(5):
        y, p = noisy(n=97, k=5, err=0.5, seed=seed)
        acc, f1 = uncertainty.accuracy_macro_f1(y, p)
        assert acc == pytest.approx(accuracy_score(y, p))
        assert f1 == pytest.approx(f1_score(y, p, average="macro", zero_division=0))


def test_warning_names_classes_under_20_test_images(capsys):
    y = [0] * 25 + [1] * 16 + [2] * 20
    assert warn_small_classes(y, ["mono", "p0.67", "poly"]) == ["p0.67"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "p0.67 (16)" in err and "fewer than 20" in err and "mono" not in err
    assert warn_small_classes([0] * 20 + [1] * 20, ["a", "b"]) == [] and capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- bootstrap CIs
def test_constant_outcome_has_zero_width_ci():
    y = np.array([0, 1, 2, 1] * 25)
    ci = uncertainty.bootstrap_ci(y, y, 1000, seed=1)  # always right: every resample scores 1
    assert ci == {"acc": [1.0, 1.0], "macro_f1": [1.0, 1.0]}
    ones = np.ones(50, dtype=int)  # a constant predictor on a one-class test set
    assert uncertainty.bootstrap_ci(ones, ones, 1000, seed=1) == {"acc": [1.0, 1.0], "macro_f1": [1.0, 1.0]}
    assert uncertainty.bootstrap_ci(ones, 0 * ones, 1000, seed=1) == {"acc": [0.0, 0.0], "macro_f1": [0.0, 0.0]}


def test_accuracy_ci_matches_the_binomial_interval():
    n, right = 400, 300  # p = 0.75: normal/Wilson half-width 1.96 * sqrt(p(1-p)/n) = 0.0424
    y = np.ones(n, dtype=int)
    p = np.r_[np.ones(right, dtype=int), np.zeros(n - right, dtype=int)]
    lo, hi = uncertainty.bootstrap_ci(y, p, 4000, seed=0)["acc"]
    half = 1.96 * math.sqrt(0.75 * 0.25 / n)
    z2 = 1.96 ** 2  # Wilson score interval
    centre = (0.75 + z2 / (2 * n)) / (1 + z2 / n)
    w = 1.96 * math.sqrt(0.75 * 0.25 / n + z2 / (4 * n * n)) / (1 + z2 / n)
    assert lo == pytest.approx(0.75 - half, abs=0.01) and hi == pytest.approx(0.75 + half, abs=0.01)
    assert lo == pytest.approx(centre - w, abs=0.01) and hi == pytest.approx(centre + w, abs=0.01)


def test_bootstrap_is_seeded_and_reproducible():
    y, p = noisy()
    a = uncertainty.bootstrap_ci(y, p, 1000, seed=42)
    assert a == uncertainty.bootstrap_ci(y, p, 1000, seed=42)
    assert a != uncertainty.bootstrap_ci(y, p, 1000, seed=43)
    acc, f1 = uncertainty.accuracy_macro_f1(y, p)
    assert a["acc"][0] < acc < a["acc"][1] and a["macro_f1"][0] < f1 < a["macro_f1"][1]
    with pytest.raises(ValueError, match="differ in length"):
        uncertainty.bootstrap_ci([0, 1], [0], 1000)
    with pytest.raises(ValueError, match="zero images"):
        uncertainty.bootstrap_ci([], [], 1000)


# ----------------------------------------------------------------------------- paired delta, McNemar
def test_identical_predictions_give_delta_zero_and_ci_zero():
    y, p = noisy()
    d = uncertainty.paired_bootstrap(y, p, p.copy(), 1000, seed=3)
    assert d == {"delta_acc": 0.0, "delta_acc_ci": [0.0, 0.0], "delta_macro_f1": 0.0, "delta_macro_f1_ci": [0.0, 0.0]}
    assert uncertainty.mcnemar_p(y, p, p) == 1.0


def test_paired_delta_of_a_clearly_better_model_excludes_zero():
    y, worse = noisy(n=400, err=0.6, seed=1)
    better = y.copy()
    better[:40] = (y[:40] + 1) % 3  # 90% right
    d = uncertainty.paired_bootstrap(y, worse, better, 1000, seed=0)
    acc_w, f1_w = uncertainty.accuracy_macro_f1(y, worse)
    assert d["delta_acc"] == pytest.approx(0.9 - acc_w) and d["delta_acc_ci"][0] > 0
    assert d["delta_macro_f1_ci"][0] > 0 and d["delta_macro_f1_ci"][0] < d["delta_macro_f1"] < d["delta_macro_f1_ci"][1]
    # swapping the models flips the sign (same resamples, same seed)
    r = uncertainty.paired_bootstrap(y, better, worse, 1000, seed=0)
    assert r["delta_acc"] == -d["delta_acc"] and r["delta_acc_ci"] == pytest.approx([-d["delta_acc_ci"][1],
                                                                                     -d["delta_acc_ci"][0]])


def test_mcnemar_exact_on_hand_computed_tables():
    # 1 vs 6 discordant: 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8/128
    assert uncertainty.mcnemar_exact(1, 6) == pytest.approx(0.125)
    assert uncertainty.mcnemar_exact(6, 1) == pytest.approx(0.125)
    assert uncertainty.mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert uncertainty.mcnemar_exact(3, 3) == 1.0 and uncertainty.mcnemar_exact(0, 0) == 1.0
    # 2 vs 12: 2 * (1 + 14 + 91) / 2^14
    assert uncertainty.mcnemar_exact(2, 12) == pytest.approx(2 * 106 / 16384)
    # the table from predictions: a right/b wrong on images 0-1, a wrong/b right on image 2, both right on 3
    y, a, b = [0, 1, 2, 0, 1], [0, 1, 0, 0, 2], [1, 0, 2, 0, 0]
    assert uncertainty.mcnemar_table(y, a, b) == (2, 1)
    assert uncertainty.mcnemar_p(y, a, b) == pytest.approx(1.0)  # 2 * (1 + 3) / 8 = 1


# ----------------------------------------------------------------------------- across seeds
def test_seed_summary_is_the_t_interval():
    s = uncertainty.seed_summary([0.50, 0.52, 0.54])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.52) and s["sd"] == pytest.approx(0.02)
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, df=2)
    assert s["ci"] == pytest.approx([0.52 - half, 0.52 + half])
    assert uncertainty.seed_summary([0.5]) == {"n": 1, "mean": 0.5, "sd": None, "ci": None}
    assert uncertainty.seed_summary([])["n"] == 0


def test_combined_ci_adds_the_test_split_noise():
    vals = [-0.02, -0.03, -0.025]
    t_only = uncertainty.seed_summary(vals)["ci"]
    both = uncertainty.combined_ci(vals, [[-0.07, 0.03], [-0.08, 0.02], [-0.075, 0.025]])  # bootstrap half-width 0.05
    h_seed = (t_only[1] - t_only[0]) / 2
    assert (both[1] - both[0]) / 2 == pytest.approx(math.hypot(h_seed, 0.05))
    assert uncertainty.combined_ci([0.01], [[-0.02, 0.05]]) == [-0.02, 0.05]  # one seed: its bootstrap CI
    assert uncertainty.combined_ci([0.01], [None]) is None


def test_verdicts_follow_the_interval():
    assert uncertainty.verdict([-0.08, -0.01]) == "loss"
    assert uncertainty.verdict([0.01, 0.04]) == "gain"
    assert uncertainty.verdict([-0.05, 0.01]) == "no loss detected"
    assert uncertainty.verdict([0.0, 0.0]) == "no loss detected"
    assert uncertainty.verdict(None) is None


# ----------------------------------------------------------------------------- the report's pairing
def _preds(path, rows, index=True):
    head = "index,actual,predicted\n" if index else "actual,predicted\n"
    path.write_text(head + "".join((f"{i}," if index else "") + f"{a},{p}\n" for i, (a, p) in rows))
    return path


def test_report_pairs_the_two_prediction_files_by_index(tmp_path):
    from elimnet.report.summary import paired_test_stats
    from elimnet.train.outputs import read_predictions

    truth = ["a", "b", "c", "a", "b", "c", "a", "b"]
    base = ["a", "b", "a", "a", "c", "c", "b", "b"]  # 5 right
    cand = ["a", "b", "c", "a", "b", "c", "b", "a"]  # 6 right
    order = [3, 0, 7, 1, 6, 2, 5, 4]  # the candidate's rows in another order pair by index all the same
    b = read_predictions(_preds(tmp_path / "b.csv", [(i, (truth[i], base[i])) for i in range(8)]))
    c = read_predictions(_preds(tmp_path / "c.csv", [(i, (truth[i], cand[i])) for i in order]))
    s = paired_test_stats(b, c, 1000, seed=42)
    ids = {"a": 0, "b": 1, "c": 2}
    y, pa, pb = ([ids[v] for v in seq] for seq in (truth, base, cand))
    d = uncertainty.paired_bootstrap(y, pa, pb, 1000, 42)
    assert s["delta_test_acc"] == pytest.approx(1 / 8) and s["delta_test_acc_ci"] == d["delta_acc_ci"]
    assert s["delta_test_macro_f1"] == pytest.approx(d["delta_macro_f1"])
    assert s["delta_test_macro_f1_ci"] == d["delta_macro_f1_ci"]
    # discordant: base right/cand wrong on image 7; base wrong/cand right on 2, 4: p = 2 * (1 + 3) / 8 = 1
    assert s["mcnemar_p"] == 1.0 and s["paired_images"] == 8
    # files without an index column pair by row order
    assert read_predictions(_preds(tmp_path / "old.csv", [(i, (truth[i], base[i])) for i in range(8)],
                                   index=False)) == b


def test_report_refuses_predictions_on_different_images(tmp_path):
    from elimnet.errors import StageError
    from elimnet.report.summary import paired_test_stats
    from elimnet.train.outputs import read_predictions

    b = read_predictions(_preds(tmp_path / "b.csv", [(0, ("a", "a")), (1, ("b", "a"))]))
    for rows in ([(0, ("a", "a"))], [(0, ("a", "a")), (1, ("a", "a"))]):  # one image short; another truth
        c = read_predictions(_preds(tmp_path / "c.csv", rows))
        with pytest.raises(StageError, match="not evaluated on the same test images"):
            paired_test_stats(b, c, 1000, seed=0)


# ----------------------------------------------------------------------------- two-level bootstrap (repeats x images)
def _all(value, n):
    return np.full(n, value, dtype=int)


def test_identical_repeats_reduce_to_the_paired_bootstrap():
    y, a = noisy(n=300, err=0.4, seed=5)
    _, b = noisy(n=300, err=0.3, seed=6)
    b = np.where(np.arange(300) % 2 == 0, y, b)
    one = uncertainty.paired_bootstrap(y, a, b, 1000, seed=7)
    for repeats in (1, 2, 4):
        two = uncertainty.two_level_bootstrap(y, np.tile(a, (repeats, 1)), np.tile(b, (repeats, 1)), 1000, seed=7)
        assert two["repeats"] == repeats
        assert two["delta_macro_f1"] == pytest.approx(one["delta_macro_f1"])
        assert two["delta_macro_f1_ci"] == pytest.approx(one["delta_macro_f1_ci"])
        assert two["delta_acc_ci"] == pytest.approx(one["delta_acc_ci"])


def test_between_repeat_spread_alone_gives_the_hand_computed_interval():
    """All-right predictions score 1 on every image resample and all-wrong ones 0, so the images add no noise:
    the deltas of the 4 repeats are [0, 0, 0, -1], and the mean of 4 repeats drawn with replacement is -k/4
    with k ~ Binomial(4, 1/4): P(k >= 3) = 0.051 > 2.5% > P(k = 4) = 0.004, P(k = 0) = 0.32 > 2.5%."""
    y = np.arange(40) % 4
    wrong = (y + 1) % 4
    base = np.tile(y, (4, 1))
    cand = np.stack([y, y, y, wrong])
    d = uncertainty.two_level_bootstrap(y, base, cand, 2000, seed=0)
    assert d["delta_macro_f1"] == pytest.approx(-0.25) and d["per_repeat_delta_macro_f1"] == [0, 0, 0, -1]
    assert d["delta_macro_f1_ci"] == [-0.75, 0.0] and d["verdict"] == "no loss detected"
    assert d["delta_acc_ci"] == [-0.75, 0.0]


def test_a_known_between_repeat_spread_widens_the_interval_as_computed_by_hand():
    """Var(two-level mean delta) = Var_images(mean delta) + Var_repeats(delta)/R for independent levels; the
    percentile CI's half-width follows as 1.96 sd (checked to Monte Carlo precision)."""
    n, repeats = 600, 4
    y, base = noisy(n=n, err=0.5, seed=11)
    cands = []
    for r, err in enumerate([0.1, 0.3, 0.5, 0.7]):  # a wide, known spread of the candidate's quality
        _, c = noisy(n=n, err=err, seed=11)  # same labels (same seed), another error rate
        cands.append(c)
    cands = np.stack(cands)
    two = uncertainty.two_level_bootstrap(y, np.tile(base, (repeats, 1)), cands, 4000, seed=1)
    per_repeat = np.array(two["per_repeat_delta_macro_f1"])
    pooled = uncertainty.two_level_bootstrap(y, np.tile(base, (repeats, 1)), np.tile(cands[1], (repeats, 1)),
                                             4000, seed=1)
    h_images = (pooled["delta_macro_f1_ci"][1] - pooled["delta_macro_f1_ci"][0]) / 2
    h_repeats = 1.96 * per_repeat.std() / math.sqrt(repeats)  # the bootstrap's plug-in sd: ddof = 0
    half = (two["delta_macro_f1_ci"][1] - two["delta_macro_f1_ci"][0]) / 2
    assert half > 2 * h_images
    assert half == pytest.approx(math.hypot(h_images, h_repeats), rel=0.15)


def test_one_repeat_gives_no_verdict_and_says_why():
    y, a = noisy(n=300, err=0.6, seed=2)
    d = uncertainty.two_level_bootstrap(y, a, y.copy(), 1000, seed=0)  # a clear gain, but one run
    assert d["repeats"] == 1 and d["delta_macro_f1_ci"][0] > 0
    assert d["verdict"] is None and d["note"] == "training variance not measured (train.repeats=1)"
    assert "note" not in uncertainty.two_level_bootstrap(y, np.stack([a, a]), np.stack([y, y]), 1000)


def test_two_level_ci_of_one_model_and_shape_checks():
    y = np.arange(40) % 4
    ci = uncertainty.two_level_ci(y, np.stack([y, y, y, (y + 1) % 4]), 2000, seed=0)
    assert ci == {"acc": [0.25, 1.0], "macro_f1": [0.25, 1.0]}  # mean of 4 draws from {1, 1, 1, 0}
    with pytest.raises(ValueError, match="one row per repeat"):
        uncertainty.two_level_ci(y, np.stack([y[:-1]]), 1000)
    with pytest.raises(ValueError, match="differ in repeats"):
        uncertainty.two_level_bootstrap(y, np.stack([y, y]), y, 1000)


def test_out_of_fold_predictions_pool_into_one_paired_bootstrap():
    y, a = noisy(n=300, err=0.4, seed=3)
    _, b = noisy(n=300, err=0.2, seed=3)
    folds = [slice(0, 100), slice(100, 200), slice(200, 300)]
    d = uncertainty.out_of_fold_bootstrap([y[f] for f in folds], [a[f] for f in folds], [b[f] for f in folds],
                                          1000, seed=4)
    assert d["folds"] == 3 and d["images"] == 300
    assert d["delta_macro_f1_ci"] == uncertainty.paired_bootstrap(y, a, b, 1000, seed=4)["delta_macro_f1_ci"]
    assert d["verdict"] == uncertainty.verdict(d["delta_macro_f1_ci"])


# ----------------------------------------------------------------------------- the report's pooling of repeats
def _write_repeat(m, role, r, truth, pred, names):
    from elimnet.io import write_json, write_text
    from elimnet.report.repeats import repeat_dir

    d = repeat_dir(m, role, r)
    acc, f1 = uncertainty.accuracy_macro_f1(truth, pred)
    write_json(d / "eval.json", {"test_loss": 1.0 + r, "test_acc": acc, "test_macro_f1": f1,
                                 "test_acc_ci": [0, 1], "test_macro_f1_ci": [0, 1],
                                 "per_class_f1": {n: 0.5 for n in names}})
    write_json(d / "train.json", {"best_epoch": r + 1, "val_macro_f1": 0.1 * (r + 1), "train_loss": 2.0})
    write_json(d / "export.json", {"accuracy": {"fp32": {"acc": acc, "macro_f1": f1}}})
    write_text(d / "predictions.csv", "index,actual,predicted\n" + "".join(
        f"{i},{names[a]},{names[p]}\n" for i, (a, p) in enumerate(zip(truth, pred))))


def test_report_pools_the_repeats_with_the_two_level_interval(tmp_path):
    from elimnet.report.repeats import apply_repeats, pool_repeats

    names = ["a", "b", "c"]
    y, base0 = noisy(n=120, err=0.5, seed=1)
    _, base1 = noisy(n=120, err=0.4, seed=1)
    _, cand0 = noisy(n=120, err=0.3, seed=1)
    _, cand1 = noisy(n=120, err=0.2, seed=1)
    for role, preds in (("baseline", (base0, base1)), ("candidate", (cand0, cand1))):
        for r, p in enumerate(preds):
            _write_repeat(tmp_path, role, r, y, p, names)
    pooled = pool_repeats(tmp_path, 2, 1000, seed=42)
    d = uncertainty.two_level_bootstrap(y, [base0, base1], [cand0, cand1], 1000, 42)
    assert pooled["repeats"] == 2 and pooled["verdict"] == d["verdict"] and "verdict_note" not in pooled
    assert pooled["delta_test_macro_f1_ci"] == d["delta_macro_f1_ci"]
    f1 = {k: uncertainty.accuracy_macro_f1(y, p)[1] for k, p in (("b0", base0), ("b1", base1), ("c0", cand0),
                                                                 ("c1", cand1))}
    assert pooled["per_repeat"]["baseline"]["test_macro_f1"] == [f1["b0"], f1["b1"]]
    assert pooled["per_repeat"]["candidate"]["best_epoch"] == [1, 2]
    assert pooled["candidate"]["test_macro_f1"] == pytest.approx((f1["c0"] + f1["c1"]) / 2)
    assert pooled["candidate"]["val_macro_f1"] == pytest.approx(0.15) and pooled["baseline"]["test_loss"] == 1.5
    assert pooled["candidate"]["test_macro_f1_onnx_fp32"] == pytest.approx((f1["c0"] + f1["c1"]) / 2)
    assert pooled["baseline"]["test_macro_f1_ci"] == uncertainty.two_level_ci(y, [base0, base1], 1000, 42)["macro_f1"]
    summary = {"baseline": {"test_macro_f1": 0.0, "test_acc": 0.0}, "candidate": {"test_macro_f1": 0.0,
               "test_acc": 0.0}, "ratios": {"params": 0.5}}
    apply_repeats(summary, pooled)
    assert summary["ratios"]["test_macro_f1_delta"] == pytest.approx(summary["delta_test_macro_f1"])
    assert summary["ratios"]["params"] == 0.5 and summary["repeats"] == 2


def test_report_of_one_repeat_gives_no_verdict(tmp_path):
    from elimnet.errors import StageError
    from elimnet.report.repeats import pool_repeats

    names = ["a", "b", "c"]
    y, p = noisy(n=60, seed=2)
    _write_repeat(tmp_path, "baseline", 0, y, p, names)
    _write_repeat(tmp_path, "candidate", 0, y, y, names)
    pooled = pool_repeats(tmp_path, 1, 1000, seed=0)
    assert pooled["verdict"] is None and pooled["verdict_note"] == "training variance not measured (train.repeats=1)"
    assert pooled["candidate"]["test_macro_f1_ci"] == [0, 1]  # one run: its own evaluate CI
    with pytest.raises(StageError, match="r1/predictions.csv: missing"):
        pool_repeats(tmp_path, 2, 1000, seed=0)
    _write_repeat(tmp_path, "baseline", 1, y[:-1], p[:-1], names)
    _write_repeat(tmp_path, "candidate", 1, y, y, names)
    with pytest.raises(StageError, match="baseline/r1/predictions.csv: not the test images"):
        pool_repeats(tmp_path, 2, 1000, seed=0)
