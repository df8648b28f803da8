"""`elimnet compare`: experiment records -> table rows (aggregate), Pareto front, terminal/Markdown/CSV/PNG/dvc-plots
output (render); in a real DVC repo: the workspace first, one machine's latencies, nothing written."""
from __future__ import annotations

import copy
import csv
import io
import json

import pytest

from elimnet.config import defaults
from elimnet.errors import StageError
from elimnet.report.aggregate import comparison_rows, mark_pareto, method_label, pareto_front
from elimnet.report.records import ExpRecord, records_from_dvc
from elimnet.report.render import to_markdown, write_files


def write_comparison(records, out, x="latency_cpu_bs1_ms", y="test_macro_f1"):
    """What `elimnet compare --out DIR` does: rows, their front, the four files."""
    rows = comparison_rows(records)
    front = mark_pareto(rows, x, y)
    write_files(rows, out, x, y)
    return {"rows": rows, "front": front}


def params(**over):
    p = defaults().flat()
    p.update({"model.arch": "resnet18", "data.image_size": 64, **over})
    return p


def row(params_, latency, f1, **extra):
    r = {"params": params_, "macs": params_ * 10, "layers": params_ // 1000,
         "latency_cpu_bs1_ms": latency, "latency_cpu_bs64_ms": latency * 30,
         **{f"{s}_{m}": 0.5 for s in ("train", "val", "test") for m in ("loss", "acc", "macro_f1")}}
    r.update(test_macro_f1=f1, **extra)
    return r


def summary(base_lat, cand, steps=("elim",), weights="imagenet"):
    b = row(11_000_000, base_lat, 0.80)
    return {"arch": "resnet18", "weights": weights, "steps": list(steps), "removed_stages": [], "cuda": False,
            "baseline": b, "candidate": cand,
            "ratios": {"latency_reduction_cpu_bs1": 1 - cand["latency_cpu_bs1_ms"] / base_lat,
                       "latency_reduction_cpu_bs64": 1 - cand["latency_cpu_bs64_ms"] / (base_lat * 30)}}


def two_records():
    elim = ExpRecord("exp-elim2", params(**{"model.elim": 2}),
                     summary(10.0, row(2_000_000, 5.0, 0.78)), source="dvc:aaa")
    prune = ExpRecord("exp-prune3", params(**{"model.elim": 0, "model.prune.k": 3}),
                      summary(12.0, row(8_000_000, 9.0, 0.82), steps=("layerprune",)), source="dvc:bbb")
    return [elim, prune]


def test_rows_from_two_experiments_share_one_full_model_row():
    rows = comparison_rows(two_records())
    assert [r["name"] for r in rows] == ["full resnet18", "Elim 2", "LayerPrune k=3 (l1)"]
    full, elim, prune = rows
    assert full["role"] == "full" and full["params"] == 11_000_000 and full["test_macro_f1"] == 0.80
    assert full["latency_cpu_bs1_ms"] == 11.0  # median of the baseline's timings in both experiments
    assert elim["params"] == 2_000_000 and elim["latency_cpu_bs1_ms"] == 5.0 and elim["experiment"] == "exp-elim2"
    assert elim["reduction_cpu_bs1"] == pytest.approx(0.5) and prune["reduction_cpu_bs1"] == pytest.approx(0.25)
    assert "reduction_cpu_bs1" not in full
    for key in ("train_loss", "val_loss", "test_loss", "train_acc", "val_acc", "test_acc", "val_macro_f1"):
        assert elim[key] == 0.5


def test_different_recipes_or_weights_give_separate_full_rows():
    a, b = two_records()
    b.params["train.epochs"] = 1
    c = ExpRecord("empty", params(**{"model.weights": "none", "model.elim": 1}),
                  summary(10.0, row(3_000_000, 6.0, 0.4), weights="none"))
    names = [r["name"] for r in comparison_rows([a, b, c])]
    assert names.count("full resnet18") == 2 and "full resnet18 (empty)" in names and "empty Elim 1" in names


def test_method_labels():
    assert method_label(params(**{"model.elim": 0}), {}) == "uncompressed"
    assert method_label(params(**{"model.elim": 1, "model.diet.groups": 4, "train.kd.alpha": 0.5}), {}) \
        == "Elim 1 + Diet g=4 + KD a=0.5"
    assert method_label(params(**{"model.elim": 0, "model.filter.ratio": 0.3}), {}) == "Filter 0.3"
    assert method_label({}, {"steps": ["elim", "diet"]}) == "elim + diet"


def test_pareto_front_is_exactly_the_non_dominated_points():
    #            0 fast/bad   1 dominated by 0  2 slow/best   3 middle     4 dominated by 3  5 tie with 3
    pts = [(1.0, 0.60), (2.0, 0.55), (9.0, 0.90), (4.0, 0.80), (5.0, 0.80), (4.0, 0.80)]
    assert pareto_front(pts) == [0, 2, 3, 5]
    assert pareto_front([]) == [] and pareto_front([(1.0, 0.1)]) == [0]


def test_mark_pareto_on_rows():
    rows = comparison_rows(two_records())
    # full: 11 ms 0.80; Elim 2: 5 ms 0.78; LayerPrune: 9 ms 0.82 -> full is dominated by LayerPrune
    front = mark_pareto(rows)
    assert [rows[i]["name"] for i in front] == ["Elim 2", "LayerPrune k=3 (l1)"]
    assert [r["pareto"] for r in rows] == [False, True, True]
    rows[1]["latency_cpu_bs1_ms"] = None
    mark_pareto(rows)
    assert rows[1]["pareto"] is None


def dvc_show(records):
    """`dvc exp show --json` as DVC 3.x writes it (shape taken from a real run of dvc 3.67)."""
    from elimnet.config import unflatten

    def data(rev, rec=None, error=False):
        metrics = ({"metrics/summary.json": {"error": {"type": "FileNotFoundError", "msg": "no file"}}} if rec is None
                   else {"metrics/summary.json": {"data": rec.summary}, "metrics/data.json": {"data": {"n": 1}}})
        return {"rev": rev, "timestamp": "2026-01-01T00:00:00", "meta": {}, "deps": {}, "outs": {},
                "params": {"params.yaml": {"data": unflatten(rec.params) if rec else {"seed": 42}}},
                "metrics": metrics}

    exps = [{"revs": [{"rev": f"{i}" * 40, "name": r.name, "data": data(f"{i}" * 40, r), "error": None,
                       "experiments": None}], "executor": None, "name": r.name} for i, r in enumerate(records)]
    failed = {"revs": [{"rev": "f" * 40, "name": "broken", "data": data("f" * 40), "error": {"msg": "failed"},
                        "experiments": None}], "executor": "workspace", "name": "broken"}
    ws = {"rev": "workspace", "name": None, "data": data("workspace", records[-1]), "error": None,
          "experiments": None}
    head = {"rev": "e" * 40, "name": "main", "data": data("e" * 40), "error": None, "experiments": exps + [failed]}
    return json.loads(json.dumps([ws, head]))


def test_records_from_dvc_exp_show_json():
    recs, skipped = records_from_dvc(dvc_show(two_records()))
    # The workspace first; exp-prune3 repeats it (dvc exp run left it there): the workspace's name stays.
    assert [r.name for r in recs] == ["workspace", "exp-elim2"]
    assert skipped == ["broken"]  # the commit itself is not read unless asked for
    assert recs[1].params["model.elim"] == 2 and recs[1].params["model.prune.k"] == 0
    assert recs[0].summary["candidate"]["params"] == 8_000_000 and recs[1].source == "dvc:" + "0" * 40
    assert records_from_dvc(dvc_show(two_records()), include_commits=True)[1] == ["broken", "main"]
    with pytest.raises(StageError, match="DVC 3.x"):
        records_from_dvc({"workspace": {}})


def test_write_comparison_files(tmp_path):
    res = write_comparison(two_records(), tmp_path)
    md = (tmp_path / "compare.md").read_text().splitlines()
    assert md[0].startswith("| name | arch | n | params (M) | layers | MMACs | cpu bs1 ms | cpu bs64 ms | cpu bs1 "
                            "faster")
    assert md[0].endswith("| test F1 delta vs full | verdict (95%) | front |")
    assert len(md) == 2 + 3 and "| Elim 2 | resnet18 | 1 | 2.000 |" in md[3] and md[3].rstrip().endswith("| ★ |")
    rows = list(csv.DictReader(io.StringIO((tmp_path / "compare.csv").read_text())))
    assert [r["name"] for r in rows] == ["full resnet18", "Elim 2", "LayerPrune k=3 (l1)"]
    assert rows[1]["latency_cpu_bs64_ms"] == "150.0" and rows[0]["reduction_cpu_bs1"] == ""
    assert (tmp_path / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pts = json.loads((tmp_path / "pareto.json").read_text())
    assert [(p["name"], p["front"]) for p in pts] == [("full resnet18", False), ("Elim 2", True),
                                                      ("LayerPrune k=3 (l1)", True)]
    assert pts[1]["latency_cpu_bs1_ms"] == 5.0 and pts[1]["test_macro_f1"] == 0.78
    assert [res["rows"][i]["name"] for i in res["front"]] == ["Elim 2", "LayerPrune k=3 (l1)"]


def test_markdown_marks_missing_values():
    recs = two_records()
    recs[0].summary = copy.deepcopy(recs[0].summary)
    del recs[0].summary["candidate"]["latency_cpu_bs64_ms"]
    md = to_markdown(comparison_rows(recs))
    assert "| Elim 2 | resnet18 | 1 | 2.000 | 2000 | 20.0 | 5.00 | – |" in md


def test_compare_command_from_saved_exp_show(tmp_path, capsys):
    from elimnet.cli import main

    src = tmp_path / "show.json"
    src.write_text(json.dumps(dvc_show(two_records())))
    out = tmp_path / "reports"
    assert main(["compare", "--exp-show-json", str(src)]) == 0
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["show.json"]  # nothing written
    assert main(["compare", "--exp-show-json", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 runs, 3 rows, Pareto front (latency_cpu_bs1_ms, test_macro_f1): Elim 2, LayerPrune k=3 (l1)" in text
    assert "skipped (no metrics/summary.json): broken" in text and "main" not in text
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.md", "pareto.json", "pareto.png"]
    assert main(["compare", "--exp-show-json", str(src), "--x", "cpu"]) == 2
    assert "--x=cpu: must be BACKEND:BATCH_SIZE" in capsys.readouterr().err


# ----------------------------------------------------------------------------- seeds: grouping, CIs, verdicts
def seeded(name, seed, base_f1, cand_f1, boot_half=None, **over):
    """One finished experiment of one seed; boot_half: half-width of the paired/bootstrap CIs it reports."""
    s = summary(10.0, row(2_000_000, 5.0, cand_f1))
    s["baseline"]["test_macro_f1"] = base_f1
    s["ratios"]["test_macro_f1_delta"] = cand_f1 - base_f1
    if boot_half is not None:
        d = cand_f1 - base_f1
        s.update(delta_test_macro_f1=d, delta_test_macro_f1_ci=[d - boot_half, d + boot_half])
        for role, f1 in (("baseline", base_f1), ("candidate", cand_f1)):
            s[role]["test_macro_f1_ci"] = [f1 - 2 * boot_half, f1 + 2 * boot_half]
    return ExpRecord(name, params(seed=seed, **over), s)


def by_name(rows):
    return {r["name"]: r for r in rows}


def test_experiments_differing_only_in_seed_share_one_row():
    recs = [seeded(f"e2-{s}", s, b, c, **{"model.elim": 2})
            for s, b, c in ((42, 0.80, 0.75), (43, 0.82, 0.76), (44, 0.78, 0.74))]
    recs += [seeded("e3-42", 42, 0.80, 0.70, **{"model.elim": 3}),
             seeded("e2-lr", 42, 0.60, 0.58, **{"model.elim": 2, "train.lr": 0.1})]  # another recipe
    rows = comparison_rows(recs)
    assert [(r["name"], r["n"]) for r in rows] == [("full resnet18", 3), ("full resnet18", 1), ("Elim 2", 3),
                                                   ("Elim 2", 1), ("Elim 3", 1)]
    full, elim2 = rows[0], rows[2]
    assert full["seeds"] == [42, 43, 44] and full["experiment"] == "e2-42,e2-43,e2-44,e3-42".rsplit(",", 1)[0]
    assert full["test_macro_f1"] == pytest.approx(0.80) and full["test_macro_f1_sd"] == pytest.approx(0.02)
    half = 4.302652729911275 * 0.02 / 3 ** 0.5  # t(0.975, 2) sd / sqrt(n)
    assert full["test_macro_f1_ci"] == pytest.approx([0.80 - half, 0.80 + half])
    assert elim2["test_macro_f1"] == pytest.approx(0.75) and elim2["test_macro_f1_sd"] == pytest.approx(0.01)
    assert elim2["delta_test_macro_f1"] == pytest.approx(-0.05)
    assert elim2["delta_test_macro_f1_sd"] == pytest.approx(0.01)
    assert elim2["test_loss"] == 0.5 and elim2["test_loss_sd"] == 0.0
    # seed 42's full model appears in two experiments (Elim 2, Elim 3): it is counted once
    assert rows[0]["n"] == 3 and rows[1]["test_macro_f1"] == 0.60


def test_verdicts_over_seeds_follow_the_95_interval():
    loss = [seeded(f"l{s}", s, 0.80, 0.80 - d, boot_half=0.01, **{"model.elim": 2})
            for s, d in ((42, 0.05), (43, 0.06), (44, 0.055))]
    gain = [seeded(f"g{s}", s, 0.80, 0.80 + d, boot_half=0.01, **{"model.elim": 1})
            for s, d in ((42, 0.05), (43, 0.06), (44, 0.055))]
    noisy = [seeded(f"n{s}", s, 0.80, 0.80 + d, boot_half=0.01, **{"model.elim": 3})
             for s, d in ((42, -0.03), (43, 0.02), (44, -0.01))]
    single = [seeded("s42", 42, 0.80, 0.78, boot_half=0.04, **{"model.diet.groups": 2, "model.elim": 0})]
    old = [seeded("o42", 42, 0.80, 0.70, **{"model.prune.k": 2, "model.elim": 0})]  # no CI in its summary
    rows = by_name(comparison_rows(loss + gain + noisy + single + old))
    assert rows["Elim 2"]["verdict"] == "loss" and rows["Elim 2"]["delta_test_macro_f1_ci"][1] < 0
    assert rows["Elim 1"]["verdict"] == "gain"
    assert rows["Elim 3"]["verdict"] == "no loss detected"
    ci = rows["Elim 3"]["delta_test_macro_f1_ci"]
    assert ci[0] < 0 < ci[1]
    # the per-seed test-split noise widens the seed-to-seed interval (half-widths in quadrature)
    t_half = 4.302652729911275 * 0.025166114784235836 / 3 ** 0.5
    assert (ci[1] - ci[0]) / 2 == pytest.approx((t_half ** 2 + 0.01 ** 2) ** 0.5)
    assert rows["Diet g=2"]["n"] == 1 and rows["Diet g=2"]["delta_test_macro_f1_ci"] == pytest.approx([-0.06, 0.02])
    assert rows["Diet g=2"]["verdict"] == "no loss detected"
    assert rows["LayerPrune k=2 (l1)"]["verdict"] is None  # one seed and no bootstrap CI: nothing to say
    assert rows["full resnet18"].get("verdict") is None  # the reference itself
    md = to_markdown(comparison_rows(loss + single + old))
    assert "as accurate" not in md
    lines = {ln.split(" | ")[0].lstrip("| "): ln for ln in md.splitlines()[2:]}
    assert "| 3 |" in lines["Elim 2"] and " ± " in lines["Elim 2"] and lines["Elim 2"].endswith("| loss | – |")
    assert "-0.055 ± 0.005 [" in lines["Elim 2"]
    assert "0.780 [0.700, 0.860]" in lines["Diet g=2"] and "no loss detected" in lines["Diet g=2"]
    assert lines["LayerPrune k=2 (l1)"].endswith("| -0.100 | – | – |")


def test_csv_and_pareto_points_carry_the_intervals(tmp_path, monkeypatch):
    import matplotlib.axes

    drawn = []
    real = matplotlib.axes.Axes.errorbar
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar",
                        lambda self, x, y, **kw: drawn.append((list(x), list(y), kw["yerr"])) or real(self, x, y,
                                                                                                      **kw))
    recs = [seeded(f"e{s}", s, 0.80, c, boot_half=0.01, **{"model.elim": 2}) for s, c in ((42, 0.74), (43, 0.76))]
    write_comparison(recs, tmp_path)
    rows = list(csv.DictReader(io.StringIO((tmp_path / "compare.csv").read_text())))
    e2 = rows[1]
    assert e2["name"] == "Elim 2" and e2["n"] == "2" and float(e2["test_macro_f1"]) == pytest.approx(0.75)
    assert float(e2["test_macro_f1_sd"]) == pytest.approx(0.0141421356)
    assert float(e2["test_macro_f1_ci_lo"]) < 0.75 < float(e2["test_macro_f1_ci_hi"])
    # two seeds at -0.06 and -0.04: t(0.975, 1) = 12.7 makes the interval wide; no loss is claimed
    assert e2["verdict"] == "no loss detected" and float(e2["delta_test_macro_f1_ci_lo"]) < -0.1
    pts = json.loads((tmp_path / "pareto.json").read_text())
    assert pts[1]["n"] == 2 and pts[1]["test_macro_f1_ci"] == pytest.approx(
        [float(e2["test_macro_f1_ci_lo"]), float(e2["test_macro_f1_ci_hi"])])
    # the plot draws one error bar per point with a CI, from the mean to each end of its interval
    (xs, ys, (down, up)), = drawn
    assert ys == pytest.approx([0.80, 0.75]) and up[1] == pytest.approx(pts[1]["test_macro_f1_ci"][1] - 0.75)
    assert down[1] == pytest.approx(0.75 - pts[1]["test_macro_f1_ci"][0])


def test_mlflow_metrics_round_trip_keeps_the_intervals():
    from elimnet.report.records import _unflatten_metrics
    from elimnet.track.run_content import flat_metrics as _flat_metrics

    s = seeded("e", 42, 0.80, 0.74, boot_half=0.01).summary
    s["mcnemar_p"] = 0.03
    flat = _flat_metrics({k: s[k] for k in ("baseline", "candidate", "ratios", "delta_test_macro_f1",
                                            "delta_test_macro_f1_ci", "mcnemar_p")})
    assert flat["delta_test_macro_f1_ci_lo"] == pytest.approx(-0.07) and flat["mcnemar_p"] == 0.03
    assert flat["candidate.test_macro_f1_ci_hi"] == pytest.approx(0.76)
    back = _unflatten_metrics(flat)
    assert back["delta_test_macro_f1_ci"] == pytest.approx([-0.07, -0.05]) and back["mcnemar_p"] == 0.03
    assert back["candidate"]["test_macro_f1_ci"] == pytest.approx([0.72, 0.76])
    assert back["candidate"]["test_macro_f1"] == pytest.approx(0.74)


def test_compare_command_groups_seeds_from_exp_show(tmp_path, capsys):
    from elimnet.cli import main

    recs = [seeded(f"e2-{s}", s, 0.80, 0.80 - d, boot_half=0.01, **{"model.elim": 2})
            for s, d in ((42, 0.05), (43, 0.06), (44, 0.055))]
    src = tmp_path / "show.json"
    src.write_text(json.dumps(dvc_show(recs)))
    assert main(["compare", "--exp-show-json", str(src)]) == 0
    text = capsys.readouterr().out
    assert "3 runs, 2 rows" in text
    elim = next(line for line in text.splitlines() if line.startswith("Elim 2 "))
    assert elim.split()[2] == "3" and "  loss  " in elim  # "Elim 2", n
    assert main(["compare", "--exp-show-json", str(src), "--wide"]) == 0
    text = capsys.readouterr().out
    assert "| Elim 2 | resnet18 | 3 |" in text and "| full resnet18 | resnet18 | 3 |" in text


# ----------------------------------------------------------------------------- acceptance: a real DVC repo
AMD = {"cpu": "AMD EPYC", "machine": "x86_64", "isa": {"avx2": True, "avx512f": True}, "threads": 2, "cpus": 2,
       "torch": "2.9", "peak_fp32_gflops": 213.1}
INTEL = {**AMD, "cpu": "Intel Xeon", "isa": {"avx2": True, "avx512f": False}, "peak_fp32_gflops": 90.0}


def _commit_run(repo, hardware, base_ms, cand_ms, base_f1, cand_f1, message):
    """One finished run of the same params and seed, as the report and benchmark stages leave it, committed."""
    import subprocess

    from conftest import git_commit_all

    s = summary(base_ms, row(2_000_000, cand_ms, cand_f1))
    s["baseline"]["test_macro_f1"] = base_f1
    s["delta_test_macro_f1"] = cand_f1 - base_f1
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/summary.json").write_text(json.dumps(s))
    (repo / "metrics/headline.json").write_text(json.dumps({"test_macro_f1": cand_f1}))
    (repo / "metrics/latency.json").write_text(json.dumps({"hardware": hardware}))
    git_commit_all(repo, message)
    return subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout


def test_compare_in_a_repo_with_two_machines(tmp_path, capsys):
    """A release timed on one CPU, then the user's own run of the same params and seed on another: the
    workspace's rows come first, latency is never averaged across the machines, nothing is written."""
    import subprocess
    import sys

    import yaml

    from elimnet.cli import main
    from elimnet.config import unflatten
    from elimnet.report.records import dvc_exp_show

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "params.yaml").write_text(yaml.safe_dump(unflatten(params(**{"model.elim": 2}))))
    (repo / "dvc.yaml").write_text("metrics:\n  - metrics/headline.json\n")
    _commit_run(repo, AMD, 4.38, 2.76, 0.560, 0.597, "release, timed on AMD")
    before = _commit_run(repo, INTEL, 7.16, 4.36, 0.481, 0.578, "the user's run on Intel")
    assert before == ""

    assert main(["compare", "--repo", str(repo), "--rev", "HEAD~1"]) == 0
    text = capsys.readouterr().out
    assert subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo, capture_output=True,
                          text=True).stdout == before  # git status stays clean
    assert max(map(len, text.splitlines())) <= 160, text
    assert text.splitlines()[0] == ("x axis: cpu bs1 ms (eager PyTorch: no ONNX Runtime timings in these runs); "
                                    "n: training repeats pooled per row, over seeds")
    body = text.splitlines()[3:7]
    assert body[0].startswith("full resnet18") and " 7.16 " in body[0] and "0.481" in body[0]  # the workspace's
    assert body[2].startswith("Elim 2") and " 4.36 " in body[2] and "0.578" in body[2]
    # The release's rows keep their paired reductions, not their milliseconds; no figure is a mix of both CPUs.
    assert "+37%" in body[3] and "2.76" not in text and "4.38" not in text and "5.77" not in text
    assert "Latency (ms) measured on Intel Xeon, 2 threads" in text and "Measured on AMD EPYC" in text

    from elimnet.report.records import records_from_dvc

    records, _ = records_from_dvc(dvc_exp_show(str(repo), ["--rev", "HEAD~1"]), repo=str(repo),
                                  include_commits=True)
    assert [r.name for r in records][0] == "workspace" and len({r.machine for r in records}) == 2
    rows = comparison_rows(records)
    mark_pareto(rows)
    assert [(r["experiment"], r["latency_cpu_bs1_ms"]) for r in rows] == [
        ("workspace", 7.16), (records[1].name, None), ("workspace", 4.36), (records[1].name, None)]
    assert [r["pareto"] for r in rows] == [False, None, True, None]  # the front joins the workspace's machine only


def test_summary_fits_160_columns_and_reads_both_ort_names(capsys):
    from elimnet.report.aggregate import canonical_key, columns
    from elimnet.report.render import summary_table

    long = ExpRecord("long", params(**{"model.elim": 1, "model.diet.groups": 4, "model.filter.ratio": 0.3,
                                       "model.prune.k": 2, "train.kd.alpha": 0.5}),
                     summary(10.0, row(2_000_000, 5.0, 0.7)))
    old, new = two_records()
    old.summary = copy.deepcopy(old.summary)
    new.summary = copy.deepcopy(new.summary)
    old.summary["candidate"]["latency_onnx_bs1_ms"] = 3.0  # a release before the backend was renamed
    old.summary["ratios"]["latency_reduction_onnx_bs1"] = 0.4
    new.summary["candidate"]["latency_ort_bs1_ms"] = 4.0
    new.summary["ratios"]["latency_reduction_ort_bs1"] = 0.3
    rows = comparison_rows([long, old, new])
    x = canonical_key("latency_ort_bs1_ms")
    assert canonical_key("latency_onnx_bs1_ms") == x and canonical_key("latency_reduction_onnx_bs1") \
        == canonical_key("latency_reduction_ort_bs1") and canonical_key("test_acc_ort_int8") == "test_acc_onnx_int8"
    assert [c for c in columns(rows) if "onnx" in c or "ort" in c] == [x, x.replace("latency_", "reduction_")[:-3]]
    assert sorted(r.get(x) for r in rows if r["role"] == "candidate" and r.get(x)) == [3.0, 4.0]
    text = summary_table(rows, x)
    assert max(map(len, text.splitlines())) <= 160
    name = max((r["name"] for r in rows), key=len)
    narrow = summary_table(rows, x, width=100)
    assert len(name) > 40 and name not in narrow and name[:10] in narrow and "…" in narrow  # the name gives way
    assert max(map(len, narrow.splitlines())) <= 100


# ----------------------------------------------------------------------------- default axis, repeats counted
def _with_ort(rec, base_ms, cand_ms, precision="fp32", int8_ms=None):
    rec.summary = copy.deepcopy(rec.summary)
    rec.params = {**rec.params, "deploy.precision": precision}
    rec.summary["baseline"]["latency_ort_bs1_ms"], rec.summary["candidate"]["latency_ort_bs1_ms"] = base_ms, cand_ms
    if int8_ms is not None:
        rec.summary["baseline"]["latency_ort_int8_bs1_ms"] = int8_ms[0]
        rec.summary["candidate"]["latency_ort_int8_bs1_ms"] = int8_ms[1]
    return rec


def test_default_x_is_the_deployed_runtime_with_eager_as_the_fallback():
    from elimnet.report.aggregate import default_x

    recs = two_records()
    assert default_x(comparison_rows(recs), recs)[0] == "latency_cpu_bs1_ms"  # no ORT timings: eager
    recs = [_with_ort(recs[0], 3.0, 2.0), _with_ort(recs[1], 3.2, 2.5)]
    rows = comparison_rows(recs)
    x, what = default_x(rows, recs)
    assert x == "latency_ort_bs1_ms" and what.startswith("ONNX Runtime fp32")
    # the reference run shipped INT8 (its ort_int8 rows exist): the INT8 runtime is the axis
    int8 = [_with_ort(two_records()[0], 3.0, 2.0, "int8", (1.5, 0.9)), recs[1]]
    x, what = default_x(comparison_rows(int8), int8)
    assert x == "latency_ort_int8_bs1_ms" and "INT8" in what
    # INT8 timings in a run that did not ship INT8 do not take the axis
    fp32 = [_with_ort(two_records()[0], 3.0, 2.0, "fp32", (1.5, 0.9))]
    assert default_x(comparison_rows(fp32), fp32)[0] == "latency_ort_bs1_ms"


def test_compare_prints_its_axis_and_fronts_on_ort_by_default(tmp_path, capsys):
    from elimnet.cli import main

    recs = [_with_ort(r, 3.0, ms) for r, ms in zip(two_records(), (2.0, 2.8))]  # LayerPrune beats the full model
    src = tmp_path / "show.json"
    src.write_text(json.dumps(dvc_show(recs)))
    assert main(["compare", "--exp-show-json", str(src)]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("x axis: ort bs1 ms (ONNX Runtime fp32, the deployed runtime); ")
    assert "Pareto front (latency_ort_bs1_ms, test_macro_f1): Elim 2, LayerPrune k=3 (l1)" in text
    assert main(["compare", "--exp-show-json", str(src), "--x", "cpu:1"]) == 0
    text = capsys.readouterr().out
    assert text.splitlines()[0].startswith("x axis: cpu bs1 ms (as asked with --x); ")


def _repeated(name, seed, base, cand, folds=0, **over):
    """One experiment whose report pooled len(cand) training repeats (or folds)."""
    rec = seeded(name, seed, sum(base) / len(base), sum(cand) / len(cand), boot_half=0.01, **over)
    rec.summary.update(repeats=len(cand), folds=folds, per_repeat={
        "baseline": {"test_macro_f1": list(base)}, "candidate": {"test_macro_f1": list(cand)},
        "delta_test_macro_f1": [c - b for b, c in zip(base, cand)]})
    return rec


def test_n_counts_the_repeats_or_folds_a_row_pools():
    one = _repeated("e2", 42, (0.50, 0.54, 0.52), (0.56, 0.58, 0.60), **{"model.elim": 2})
    rows = by_name(comparison_rows([one]))
    full, elim = rows["full resnet18"], rows["Elim 2"]
    assert (full["n"], elim["n"], elim["folds"]) == (3, 3, False)
    assert elim["test_macro_f1"] == pytest.approx(0.58) and elim["test_macro_f1_sd"] == pytest.approx(0.02)
    assert full["test_macro_f1_sd"] == pytest.approx(0.02) and elim["delta_test_macro_f1_sd"] == pytest.approx(0.02)
    assert elim["test_macro_f1_ci"] == pytest.approx([0.56, 0.60])  # the report's pooled interval, kept
    # two seeds of a 3-repeat experiment: 6 trainings; a 5-fold experiment: 5 folds
    two = [one, _repeated("e2b", 43, (0.5, 0.5, 0.5), (0.6, 0.6, 0.6), **{"model.elim": 2})]
    assert by_name(comparison_rows(two))["Elim 2"]["n"] == 6
    folds = _repeated("e3", 42, (0.5,) * 5, (0.6,) * 5, folds=5, **{"model.elim": 3})
    rows = comparison_rows([folds])
    assert [(r["n"], r["folds"]) for r in rows] == [(5, True), (5, True)]
    from elimnet.report.render import axis_line, summary_table

    assert summary_table(rows, "latency_cpu_bs1_ms").splitlines()[2].split()[2] == "5f"
    assert "n: k-fold folds (f) or training repeats pooled" in axis_line("latency_cpu_bs1_ms", "eager", rows)
    assert [r["n"] for r in comparison_rows(two_records())] == [1, 1, 1]  # reports from before repeats
