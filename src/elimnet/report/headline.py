"""The few numbers compared across experiments: metrics/headline.json (`dvc exp show`, `dvc metrics show`)
and the latency line the report stage prints. Everything else stays in summary.json (`elimnet compare`)."""
from __future__ import annotations

import re

# The runtime a user ships comes first: the headline latency is the one measured on it. "onnx" is
# the fp32 ONNX Runtime backend's older name, "ort" its newer one.
HEADLINE_ORDER = ("ort_int8", "ort", "onnx", "cpu")
_REDUCTION = re.compile(r"^latency_reduction_(?P<backend>[a-z0-9_]+?)_bs(?P<bs>\d+)$")


def headline_reduction(latency: dict) -> dict | None:
    """{backend, batch_size, reduction, noisy} of the first measured of HEADLINE_ORDER at its smallest batch size."""
    for backend in HEADLINE_ORDER:
        per = latency.get(backend)
        if per:
            bs = min(per, key=int)
            c = per[bs]["candidate"]
            return {"backend": backend, "batch_size": int(bs), "reduction": c.get("reduction"),
                    "noisy": bool(c.get("noisy") or per[bs].get("baseline", {}).get("noisy"))}
    return None


# How a backend reads in headline keys: eager PyTorch is the registry's `cpu`.
KEY_NAMES = {"cpu": "eager", "onnx": "ort"}


def headline_metrics(summary: dict) -> dict:
    """The candidate's size and quality, its change against the full model with the 95% CI, the verdict over
    `repeats` trainings, and its latency reductions in percent, one key per backend and batch size:
    `faster_ort_bs001_pct` on the runtime that ships (HEADLINE_ORDER) and `faster_eager_bs001_pct` beside it
    (zero-padded so that `dvc metrics show` sorts them; 25.0 means 25% less latency)."""
    c = summary["candidate"]
    out = {"params_M": round(c["params"] / 1e6, 3), "mmacs": round(c["macs"] / 1e6, 1), "layers": c["layers"],
           "test_macro_f1": c["test_macro_f1"], "test_acc": c["test_acc"]}
    for k in ("delta_test_macro_f1", "delta_test_macro_f1_ci"):
        if k in summary:
            out[k.replace("test_macro_f1", "f1")] = summary[k]
    for k in ("repeats", "verdict"):
        if summary.get(k) is not None:
            out[k] = summary[k]
    reductions = _reductions_by_backend(summary["ratios"])
    shipped = next((b for b in HEADLINE_ORDER if reductions.get(b)), None)
    for backend in dict.fromkeys(b for b in (shipped, "cpu") if b and reductions.get(b)):
        for bs, v in sorted(reductions[backend].items()):
            out[f"faster_{KEY_NAMES.get(backend, backend)}_bs{bs:03d}_pct"] = 100 * v
    return out


def _reductions_by_backend(ratios: dict) -> dict[str, dict[int, float]]:
    """{backend: {batch size: reduction}} from summary ratios, measured values only."""
    out: dict[str, dict[int, float]] = {}
    for k, v in ratios.items():
        m = _REDUCTION.match(k)
        if m and v is not None:
            out.setdefault(m["backend"], {})[int(m["bs"])] = v
    return out
