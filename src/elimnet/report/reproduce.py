"""`elimnet reproduce`: does this machine's run reproduce the committed one, metric by metric?

After `make repro` (or `dvc repro`), the workspace's metrics/summary.json is this machine's result; the committed
one (`git show REF:metrics/summary.json`, the file `dvc metrics diff` compares) is the published result. Each
metric that has an interval is checked both ways: this machine's value inside the committed interval, and the
committed value inside this machine's interval. Verdicts must agree. Training on another CPU takes another
trajectory, so only the intervals (which include the training variance when train.repeats > 1) can agree.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from elimnet.errors import StageError
from elimnet.train import uncertainty

SUMMARY = "metrics/summary.json"
# (label, path in summary.json); each has its interval at path + "_ci"
METRICS = (("full test macro-F1", ("baseline", "test_macro_f1")),
           ("candidate test macro-F1", ("candidate", "test_macro_f1")),
           ("full test accuracy", ("baseline", "test_acc")),
           ("candidate test accuracy", ("candidate", "test_acc")),
           ("delta macro-F1", ("delta_test_macro_f1",)),
           ("delta accuracy", ("delta_test_acc",)))


def committed_summary(ref: str = "HEAD", path: str = SUMMARY, repo: str | Path = ".") -> dict:
    """summary.json as committed at `ref` (git show)."""
    out = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=repo, capture_output=True, text=True)
    if out.returncode != 0:
        why = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"git exited {out.returncode}"
        raise StageError(f"--ref {ref}: no committed {path} ({why}); run inside the elimnet repo, or pass --ref "
                         f"a commit that has results")
    return json.loads(out.stdout)


def _get(summary: dict, path: tuple[str, ...]):
    node = summary
    for key in path[:-1]:
        node = node.get(key) or {}
    return node.get(path[-1]), node.get(path[-1] + "_ci")


def _inside(value, ci) -> bool | None:
    if value is None or not ci:
        return None
    return ci[0] <= value <= ci[1]


def _verdict(summary: dict) -> str | None:
    """The summary's verdict; older summaries (no "verdict") get the one their delta interval gives."""
    if "verdict" in summary:
        return summary["verdict"]
    return uncertainty.verdict(summary.get("delta_test_macro_f1_ci"))


def compare_summaries(here: dict, committed: dict) -> dict:
    """{"metrics": [rows], "verdict": {...}, "reproduced": bool}; a row says where each value lies."""
    rows = []
    for label, path in METRICS:
        (v, ci), (cv, cci) = _get(here, path), _get(committed, path)
        if v is None or cv is None:
            continue
        rows.append({"metric": label, "here": v, "here_ci": ci, "committed": cv, "committed_ci": cci,
                     "here_in_committed_ci": _inside(v, cci), "committed_in_here_ci": _inside(cv, ci)})
    verdicts = {"here": _verdict(here), "committed": _verdict(committed),
                "repeats": {"here": here.get("repeats", 1), "committed": committed.get("repeats", 1)},
                "folds": {"here": here.get("folds", 0), "committed": committed.get("folds", 0)}}
    verdicts["agree"] = verdicts["here"] == verdicts["committed"]
    ok = verdicts["agree"] and all(r["here_in_committed_ci"] is not False and r["committed_in_here_ci"] is not False
                                   for r in rows)
    return {"metrics": rows, "verdict": verdicts, "reproduced": ok}


def _fmt(v, ci) -> str:
    return f"{v:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def _design(verdicts: dict, side: str) -> str:
    """'3 repeats' (seeds on one split) or '5 folds' (K-fold cross-validation)."""
    folds = verdicts.get("folds", {}).get(side)
    return f"{folds} folds" if folds else f"{verdicts['repeats'][side]} repeats"


def format_report(result: dict) -> str:
    mark = {True: "yes", False: "NO", None: "-"}
    lines = [f"{'metric':26}{'this machine':>26}{'committed':>26}  {'here in committed CI':>20}  "
             f"{'committed in here CI':>20}"]
    for r in result["metrics"]:
        lines.append(f"{r['metric']:26}{_fmt(r['here'], r['here_ci']):>26}{_fmt(r['committed'], r['committed_ci']):>26}"
                     f"  {mark[r['here_in_committed_ci']]:>20}  {mark[r['committed_in_here_ci']]:>20}")
    v = result["verdict"]
    lines.append(f"verdict: this machine {v['here']!r} ({_design(v, 'here')}), committed "
                 f"{v['committed']!r} ({_design(v, 'committed')}): {'agree' if v['agree'] else 'DIFFER'}")
    lines.append("reproduced: every value inside the other's interval and the verdicts agree" if result["reproduced"]
                 else "NOT reproduced: see the rows marked NO (or the verdict) above")
    return "\n".join(lines)


def run_reproduce(summary_path: str | Path = SUMMARY, ref: str = "HEAD", repo: str | Path = ".") -> dict:
    """Compare the workspace's summary with the one committed at `ref`."""
    path = Path(repo) / summary_path
    if not path.is_file():
        raise StageError(f"{path}: missing; run the pipeline on this machine first (make repro)")
    return compare_summaries(json.loads(path.read_text()), committed_summary(ref, str(summary_path), repo))
