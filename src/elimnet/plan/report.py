"""reports/plan.json, plan.md and plan.png from the plan's reference, front and choice."""
from __future__ import annotations

from pathlib import Path

from elimnet.io import write_json, write_text

ENTRY_FIELDS = ("name", "methods", "params", "macs", "latency_ms", "runtime", "precision", "test_macro_f1",
                "test_macro_f1_ci")


def entry(row: dict, runtime: str) -> dict:
    """A front/choice entry: the issue's fields first, then what explains them."""
    out = {"name": row["name"], "methods": row["methods"], "params": row["params"], "macs": row["macs"],
           "latency_ms": row["latency_ms"], "runtime": runtime, "precision": row["overrides"]["deploy.precision"],
           "test_macro_f1": row.get("test_macro_f1"), "test_macro_f1_ci": row.get("test_macro_f1_ci")}
    out.update({"speedup_vs_full": row["reference_ms"] / row["latency_ms"], "proxy_macro_f1": row["score"],
                "test_macro_f1_runs": row.get("test_macro_f1_runs"), "delta_macro_f1_ci": row.get("delta_macro_f1_ci"),
                "verdict": row.get("verdict"), "overrides": row["overrides"], "trial": row["trial"]})
    return out


def write_outputs(plan: dict, out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    paths = {"json": out_dir / "plan.json", "md": out_dir / "plan.md", "png": out_dir / "plan.png"}
    write_json(paths["json"], plan)
    write_text(paths["md"], markdown(plan))
    figure(plan, paths["png"])
    return paths


def _ci(ci) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "–"


def _f1(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def markdown(plan: dict) -> str:
    ref, choice = plan["reference"], plan.get("choice")
    lines = [f"# elimnet plan: {plan['study']}", "",
             f"Budget **{plan['budget_ms']:.2f} ms** per batch of {plan['batch_size']} on {ref['runtime']} "
             f"({plan['budget_rule']}); full model {ref['latency_ms']:.2f} ms fp32. CPU: {plan['hardware']['cpu']}, "
             f"{plan['threads'] or 'default'} threads. Trials: {plan['trials']}.", "",
             "| model | precision | params | MMACs | ms | faster than full | proxy F1 | test macro-F1 [95% CI] "
             "| Δ vs full [95% CI] | verdict |", "|---|---|---|---|---|---|---|---|---|---|",
             f"| full | fp32 | {ref['params']:,} | {ref['macs'] / 1e6:.1f} | {ref['latency_ms']:.2f} | 1.00x | – "
             f"| {_f1(ref.get('test_macro_f1'))} {_ci(ref.get('test_macro_f1_ci'))} | – | – |"]
    for e in plan["front"]:
        mark = " **(choice)**" if choice and e["trial"] == choice["trial"] else ""
        lines.append(f"| {e['name']}{mark} | {e['precision']} | {e['params']:,} | {e['macs'] / 1e6:.1f} "
                     f"| {e['latency_ms']:.2f} | {e['speedup_vs_full']:.2f}x | {e['proxy_macro_f1']:.3f} "
                     f"| {_f1(e['test_macro_f1'])} {_ci(e['test_macro_f1_ci'])} | {_ci(e.get('delta_macro_f1_ci'))} "
                     f"| {e.get('verdict') or '–'} |")
    if choice:
        lines += ["", f"Choice: **{choice['name']}**. Reproduce it in the pipeline:", "",
                  f"```bash\n{choice['command']}\n```"]
    else:
        lines += ["", "No candidate met the budget: raise --budget or run more --trials."]
    rank = plan["proxy"]
    if rank.get("spearman_vs_test_macro_f1") is not None:
        lines += ["", f"Proxy (imprinting) against the full finetune's test macro-F1: Spearman "
                      f"{rank['spearman_vs_test_macro_f1']:+.2f} over {rank['candidates']} finalists."]
    lines += ["", "Rows are the Pareto front of test macro-F1 (mean over repeats, full recipe) against the measured "
              "deployed latency, among the finalists the proxy picked under the budget; \"faster\" is the paired "
              "ratio against the full model timed in the same rounds. See docs/plan.md.", ""]
    return "\n".join(lines)


def figure(plan: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from elimnet.io import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for e in [dict(plan["reference"], name="full", precision="fp32")] + plan["front"]:
        if e.get("test_macro_f1") is None:
            continue
        ci = e.get("test_macro_f1_ci") or [e["test_macro_f1"]] * 2
        err = [[e["test_macro_f1"] - ci[0]], [ci[1] - e["test_macro_f1"]]]
        ax.errorbar(e["latency_ms"], e["test_macro_f1"], yerr=err, fmt="s" if e["precision"] == "int8" else "o",
                    capsize=3, color="gray" if e["name"] == "full" else None)
        ax.annotate(e["name"], (e["latency_ms"], e["test_macro_f1"]), fontsize=7, xytext=(4, 4),
                    textcoords="offset points")
    ax.axvline(plan["budget_ms"], color="red", linestyle="--", label=f"budget {plan['budget_ms']:.2f} ms")
    ax.set_xlabel(f"latency (ms, batch {plan['batch_size']}, {plan['reference']['runtime']})")
    ax.set_ylabel("test macro-F1 (mean, 95% CI)")
    ax.set_title("elimnet plan: front (o fp32, s int8)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
