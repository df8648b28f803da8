"""report: candidate next to baseline in metrics/summary.json, a curves plot, one MLflow run."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from elimnet.bench import BACKENDS
from elimnet.config import Config
from elimnet.errors import StageError
from elimnet.io import atomic_path, read_json, write_json
from elimnet.track import git_commit, log_run, tracking_uri

ROLES = ("baseline", "candidate")
# summary.json's paired statistics, logged to MLflow under the same names (a [lo, hi] as _lo / _hi)
PAIRED = ("delta_test_macro_f1", "delta_test_macro_f1_ci", "delta_test_acc", "delta_test_acc_ci", "mcnemar_p")


def _read_history(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read_predictions(path: Path) -> dict[int, tuple[str, str]]:
    """{index: (actual, predicted)} from evaluate's predictions.csv (row order when there is no index column)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {int(r["index"]) if "index" in r else i: (r["actual"], r["predicted"]) for i, r in enumerate(rows)}


def paired_test_stats(baseline: dict, candidate: dict, resamples: int, seed: int) -> dict:
    """Candidate minus baseline on the same test images: paired bootstrap CIs and McNemar's exact p."""
    from elimnet.train import uncertainty

    if baseline.keys() != candidate.keys() or any(baseline[i][0] != candidate[i][0] for i in baseline):
        raise StageError("metrics/{baseline,candidate}/predictions.csv: the two models were not evaluated on the "
                         "same test images (index or actual differ); rerun both evaluate stages")
    order = sorted(baseline)
    names = {n: i for i, n in enumerate(sorted({v for i in order for v in (*baseline[i], candidate[i][1])}))}
    y = [names[baseline[i][0]] for i in order]
    a, b = [names[baseline[i][1]] for i in order], [names[candidate[i][1]] for i in order]
    d = uncertainty.paired_bootstrap(y, a, b, resamples, seed)
    return {"delta_test_macro_f1": d["delta_macro_f1"], "delta_test_macro_f1_ci": d["delta_macro_f1_ci"],
            "delta_test_acc": d["delta_acc"], "delta_test_acc_ci": d["delta_acc_ci"],
            "mcnemar_p": uncertainty.mcnemar_p(y, a, b), "paired_images": len(order),
            "bootstrap": {"resamples": resamples, "seed": seed, "level": uncertainty.LEVEL}}


def summarize(structure: dict, train: dict[str, dict], evals: dict[str, dict], latency: dict) -> dict:
    rows = {}
    for role, part in (("baseline", "full"), ("candidate", "candidate")):
        p = structure[part]
        row = {"params": p["params"], "macs": p["macs"], "layers": p["layers"],
               **{k: v for k, v in train[role].items() if k.startswith(("train_", "val_"))},
               **{k: evals[role][k] for k in ("test_loss", "test_acc", "test_macro_f1")},
               **{k: evals[role][k] for k in ("test_acc_ci", "test_macro_f1_ci") if k in evals[role]}}
        for dev in BACKENDS:  # cpu, cuda, onnx, compile; unmeasured ones are null
            for bs, stats in (latency.get(dev) or {}).items():
                row[f"latency_{dev}_bs{bs}_ms"] = stats[role]["median_ms"]
        rows[role] = row
    b, c = rows["baseline"], rows["candidate"]
    ratios = {"params": c["params"] / b["params"], "macs": c["macs"] / b["macs"], "layers": c["layers"] / b["layers"],
              "test_macro_f1_delta": c["test_macro_f1"] - b["test_macro_f1"],
              "test_acc_delta": c["test_acc"] - b["test_acc"]}
    for dev in BACKENDS:  # cpu, cuda, onnx, compile; unmeasured ones are null
        for bs, stats in (latency.get(dev) or {}).items():
            ratios[f"latency_reduction_{dev}_bs{bs}"] = stats["candidate"]["reduction"]
    return {"arch": structure["arch"], "weights": structure["weights"], "removed_stages": structure["removed_stages"],
            "steps": [s["name"] for s in structure["steps"] if s["name"] != "classifier"],
            "cuda": latency.get("cuda") is not None, **rows, "ratios": ratios}


def headline_metrics(summary: dict) -> dict:
    """The few numbers people compare across experiments (`dvc exp show`): the candidate's size, quality, its
    paired change against the full model with the 95% CI, and paired latency reductions. Everything else stays
    in summary.json (`elimnet compare` reads it)."""
    c, r = summary["candidate"], summary["ratios"]
    out = {"params_M": round(c["params"] / 1e6, 3), "mmacs": round(c["macs"] / 1e6, 1), "layers": c["layers"],
           "test_macro_f1": c["test_macro_f1"], "test_acc": c["test_acc"]}
    for k in ("delta_test_macro_f1", "delta_test_macro_f1_ci"):
        if k in summary:
            out[k.replace("test_macro_f1", "f1")] = summary[k]
    for k, v in r.items():
        if k.startswith("latency_reduction_cpu_") and v is not None:
            out[k.replace("latency_reduction_cpu_", "faster_")] = v
    return out


def plot_curves(histories: dict[str, list[dict]], path: Path) -> None:
    import matplotlib.pyplot as plt

    from elimnet.report.figures import CURVES_DPI, curves_figure

    fig = curves_figure(histories)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=CURVES_DPI)
    plt.close(fig)


def run_report(cfg: Config, metrics_dir: str | Path, out: str | Path, plot_path: str | Path,
               model_path: str | Path | None = None, deploy_dir: str | Path | None = None,
               data_dir: str | Path | None = None) -> dict:
    m = Path(metrics_dir)
    structure, latency = read_json(m / "structure.json"), read_json(m / "latency.json")
    from elimnet.report.repeats import apply_repeats, pool_repeats, repeat_dir, repeat_files

    first = {r: repeat_dir(m, r, 0) for r in ROLES}  # repeat 0: curves, confusion figures, McNemar
    train = {r: read_json(first[r] / "train.json") for r in ROLES}
    evals = {r: read_json(first[r] / "eval.json") for r in ROLES}
    histories = {r: _read_history(first[r] / "history.csv") for r in ROLES}
    summary = summarize(structure, train, evals, latency)
    summary.update(paired_test_stats(*(read_predictions(first[r] / "predictions.csv") for r in ROLES),
                                     cfg["train.bootstrap"], cfg["seed"]))
    apply_repeats(summary, pool_repeats(m, cfg["train.repeats"], cfg["train.bootstrap"], cfg["seed"]))
    summary["headline"] = headline_reduction(latency)
    plot_curves(histories, Path(plot_path))
    write_json(out, summary)
    write_json(Path(out).with_name("headline.json"), headline_metrics(summary))
    if cfg["mlflow.enabled"]:
        run_name = os.environ.get("DVC_EXP_NAME") or "workspace"
        params = {k: v for k, v in cfg.flat().items() if not k.startswith("mlflow.")}
        metrics = {"baseline": summary["baseline"], "candidate": summary["candidate"], "ratios": summary["ratios"],
                   "data": {"skipped_total": read_json(m / "data.json").get("skipped_total", 0)},
                   **{k: summary[k] for k in PAIRED}}
        artifacts = [out, plot_path, m / "structure.json", m / "latency.json", m / "data.json",
                     *repeat_files(m, cfg["train.repeats"])]
        import matplotlib.pyplot as plt

        from elimnet.report.figures import confusion_figure

        # The finetuned candidate goes to MLflow as a model; the DVC-tracked file stays the source of truth.
        model = None
        if model_path:
            from elimnet.checkpoint import load_model

            model = load_model(model_path)[0]
        size = structure.get("image_size", cfg["data.image_size"])
        figures = {f"confusion_{r}.png": confusion_figure(evals[r]["confusion"], evals[r]["classes"],
                                                          f"{r}: test confusion")
                   for r in ROLES if "confusion" in evals[r] and "classes" in evals[r]}
        tags = {"git_commit": git_commit(), "dvc_exp_name": os.environ.get("DVC_EXP_NAME"),
                "arch": summary["arch"], "method": "+".join(summary["steps"]) or "full"}
        summary["mlflow_run_id"] = log_run(uri=tracking_uri(cfg), experiment=cfg["mlflow.experiment"],
                                           run_name=run_name, params=params, metrics=metrics,
                                           history={f"{r}.curve": histories[r] for r in ROLES}, artifacts=artifacts,
                                           tags=tags, model=model, input_shape=(1, 3, size, size), figures=figures,
                                           **deploy_logging(cfg, deploy_dir, data_dir))
        for fig in figures.values():
            plt.close(fig)
    return summary


def deploy_logging(cfg: Config, deploy_dir: str | Path | None, data_dir: str | Path | None) -> dict:
    """log_run arguments for the candidate's ONNX artifacts (the INT8 one, else fp32, registered as
    "<experiment>-candidate") and the prepared splits (dataset lineage)."""
    from elimnet.pipeline.deploy_stage import artifacts

    found = artifacts(deploy_dir) if deploy_dir else {}
    onnx_models = {f"onnx_{p}": path for p, path in found.items()}
    ship = "onnx_int8" if "onnx_int8" in onnx_models else "onnx_fp32"
    splits = {s: Path(data_dir) / f"{s}.pt" for s in ("train", "val", "test")} if data_dir else {}
    return {"onnx_models": onnx_models, "register": {ship: f"{cfg['mlflow.experiment']}-candidate"},
            "datasets": {s: p for s, p in splits.items() if p.is_file()}}


def add_deployed_accuracy(summary: dict, metrics_dir: Path) -> None:
    """test acc/macro-F1 of each exported artifact (metrics/<role>/export.json, when the export
    stage ran) into the summary rows: test_macro_f1_onnx_int8 etc., next to torch's test_macro_f1."""
    for role in ROLES:
        path = metrics_dir / role / "export.json"
        if not path.is_file():
            continue
        acc = read_json(path)["accuracy"]
        for precision in ("fp32", "int8"):
            if precision in acc:
                for k in ("acc", "macro_f1"):
                    summary[role][f"test_{k}_onnx_{precision}"] = acc[precision][k]


# The runtime a user ships comes first: the headline reduction is the one measured on it.
HEADLINE_ORDER = ("ort_int8", "onnx", "cpu")


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
