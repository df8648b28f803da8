"""`elimnet reproduce`: this machine's summary against the committed one, metric by metric, and the verdicts."""
import json
import os
import subprocess

import pytest

from conftest import GIT_ENV
from elimnet.report.reproduce import compare_summaries, format_report, run_reproduce


def _summary(full, cand, delta, verdict="no loss detected", repeats=3):
    return {"repeats": repeats, "verdict": verdict,
            "baseline": {"test_macro_f1": full[0], "test_macro_f1_ci": full[1]},
            "candidate": {"test_macro_f1": cand[0], "test_macro_f1_ci": cand[1]},
            "delta_test_macro_f1": delta[0], "delta_test_macro_f1_ci": delta[1]}


COMMITTED = _summary((0.60, [0.57, 0.63]), (0.61, [0.58, 0.64]), (0.01, [-0.02, 0.04]))


def test_values_inside_each_others_intervals_and_same_verdict_reproduce():
    here = _summary((0.59, [0.56, 0.62]), (0.615, [0.59, 0.64]), (0.025, [-0.01, 0.06]))
    r = compare_summaries(here, COMMITTED)
    assert r["reproduced"] and r["verdict"]["agree"]
    assert [m["metric"] for m in r["metrics"]] == ["full test macro-F1", "candidate test macro-F1", "delta macro-F1"]
    assert all(m["here_in_committed_ci"] and m["committed_in_here_ci"] for m in r["metrics"])
    assert format_report(r).splitlines()[-1].startswith("reproduced:")


def test_a_value_outside_the_committed_interval_or_another_verdict_does_not():
    # the case: the full model far below its committed interval, and the delta's verdict flips to gain
    here = _summary((0.48, [0.43, 0.53]), (0.58, [0.52, 0.63]), (0.096, [0.04, 0.153]), verdict="gain", repeats=1)
    r = compare_summaries(here, COMMITTED)
    rows = {m["metric"]: m for m in r["metrics"]}
    assert not r["reproduced"] and not r["verdict"]["agree"]
    assert rows["full test macro-F1"]["here_in_committed_ci"] is False
    assert rows["candidate test macro-F1"]["here_in_committed_ci"] is True
    assert rows["delta macro-F1"]["committed_in_here_ci"] is False
    assert r["verdict"]["repeats"] == {"here": 1, "committed": 3}
    text = format_report(r)
    assert "NO" in text and "DIFFER" in text and text.splitlines()[-1].startswith("NOT reproduced")


def test_an_old_summary_without_verdict_gets_the_one_its_interval_gives():
    old = {k: v for k, v in COMMITTED.items() if k not in ("verdict", "repeats")}
    old["delta_test_macro_f1_ci"] = [-0.09, -0.01]
    r = compare_summaries(COMMITTED, old)
    assert r["verdict"]["committed"] == "loss" and r["verdict"]["repeats"]["committed"] == 1
    assert not r["reproduced"]


def test_run_reproduce_reads_the_committed_file_with_git(tmp_path):
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True, env={**os.environ, **GIT_ENV})

    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/summary.json").write_text(json.dumps(COMMITTED))
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "results")
    here = _summary((0.48, [0.43, 0.53]), (0.61, [0.58, 0.64]), (0.01, [-0.02, 0.04]))
    (tmp_path / "metrics/summary.json").write_text(json.dumps(here))
    r = run_reproduce(repo=tmp_path)
    assert not r["reproduced"] and r["metrics"][0]["committed"] == 0.60 and r["metrics"][0]["here"] == 0.48
    from elimnet.errors import StageError

    with pytest.raises(StageError, match="--ref nope: no committed metrics/summary.json"):
        run_reproduce(ref="nope", repo=tmp_path)
