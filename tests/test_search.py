"""The Optuna NAS search: budgets, resume, MLflow child runs, and an exported model the pipeline can use."""
import json

import pytest
import torch
import yaml

from elimnet.checkpoint import load_model
from elimnet.config import ConfigError, load_params
from elimnet.models import count_params, create_model

TINY = {"train": {"batch_size": 8, "eval_batch_size": 64, "epochs": 1, "threads": 1},
        "bench": {"repeats": 3, "warmup": 1, "budget_s": 0.1}}


@pytest.fixture(autouse=True)
def _restore_threads():
    n = torch.get_num_threads()  # train.threads=1 (a shared 2-core box) must not leak into other tests
    yield
    torch.set_num_threads(n)


def _prepared(root, tiny_split):
    """A data/prepared folder as the prepare stage writes it: 4 classes of 32 px images."""
    d = root / "prepared"
    d.mkdir()
    for name, n, seed in (("train", 6, 0), ("val", 4, 1), ("test", 3, 2)):
        s = tiny_split(n_per_class=n, seed=seed)
        torch.save({"images": s.images, "labels": s.labels}, d / f"{name}.pt")
    (d / "meta.json").write_text(json.dumps({"classes": ["a", "b", "c", "d"], "image_size": 32}))
    return d


def _params(root, **search):
    p = root / "params.yaml"
    p.write_text(yaml.safe_dump({**TINY, "search": {"trials": 2, "epochs": 1, "study": "t",
                                                     "storage": f"sqlite:///{root}/study/optuna.db", **search},
                                 "mlflow": {"tracking_uri": f"sqlite:///{root}/mlflow.db", "experiment": "nas"}}))
    return p


def test_search_writes_study_resumes_and_tracks_child_runs(tmp_path, tiny_split):
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from elimnet.search import run_search

    data = _prepared(tmp_path, tiny_split)
    params = _params(tmp_path)
    out, metrics = tmp_path / "models/searched.pt", tmp_path / "metrics/search.json"
    s = run_search(load_params(params), data, out, metrics, progress=False)

    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/study/optuna.db")
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and s["trials_complete"] == 2 and s["trials_run_now"] == 2
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE", "MINIMIZE"]
    assert json.loads(metrics.read_text())["best"]["trial"] == s["best"]["trial"]

    # The export is a normal model file: it rebuilds from its config (genome in arch_args) and runs.
    model, config = load_model(out)
    best = study.trials[s["best"]["trial"]]
    assert config["arch"] == "searched_mbconv" and config["arch_args"] == best.user_attrs["genome"]
    assert count_params(model) == best.values[1]
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 4)
    front = {t.number for t in study.best_trials}
    kept = sorted(p.name for p in (tmp_path / "models/searched_trials").iterdir())
    assert kept == [f"trial_{n:04d}.pt" for n in sorted(front)]  # dominated trials' files are gone

    # Resume: the same study grows by exactly the missing trial, under the same MLflow parent run.
    s = run_search(load_params(params, ["search.trials=3"]), data, out, metrics, progress=False)
    assert (s["trials_complete"], s["trials_run_now"]) == (3, 1)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("nas").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 3
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    by_trial = {int(r.data.tags["elimnet.search.trial"]): r for r in children}
    assert by_trial[0].data.metrics["val_macro_f1"] == pytest.approx(study.trials[0].values[0])

    # A study belongs to one data set and recipe: reusing it with another recipe is refused.
    with pytest.raises(ConfigError, match=r"^search.study=t: already holds trials of another problem"):
        run_search(load_params(params, ["search.epochs=2", "search.trials=4"]), data, out, metrics, progress=False)


def test_search_survives_mlflow_down_and_export_flows_through_finetune(tmp_path, tiny_split, capsys):
    from elimnet.pipeline.train_stages import run_evaluate, run_finetune
    from elimnet.search import run_search

    data = _prepared(tmp_path, tiny_split)
    params = _params(tmp_path, trials=1, minutes=None)
    cfg = load_params(params, ["mlflow.tracking_uri=nosuchscheme://down"])
    s = run_search(cfg, data, tmp_path / "searched.pt", tmp_path / "search.json", progress=False)
    assert s["trials_complete"] == 1
    assert "warning: MLflow start at nosuchscheme://down failed" in capsys.readouterr().err

    m = run_finetune(cfg, tmp_path / "searched.pt", data, tmp_path / "ft.pt", tmp_path / "h.csv", tmp_path / "t.json")
    assert m["epochs"] == 1
    e = run_evaluate(cfg, tmp_path / "ft.pt", data, tmp_path / "eval.json", tmp_path / "pred.csv")
    assert e["images"] == 12
    model, config = load_model(tmp_path / "ft.pt")
    assert config["arch_args"] == s["best"]["genome"] and model(torch.zeros(1, 3, 32, 32)).shape == (1, 4)


def test_genomes_build_and_the_default_is_the_seed_layout():
    from elimnet.search.space import EXPANDS, HEADS, KERNELS, WIDTH_MULTS, genome_from_params

    assert count_params(create_model("searched_mbconv")) == count_params(create_model("simple_effnet"))
    p = {**{f"repeats{i}": 0 for i in range(5)}, "width": WIDTH_MULTS[0], "expand": EXPANDS[0],
         **{f"kernel{i}": KERNELS[-1] for i in range(5)}, "se": True, "head": HEADS[0]}
    g = genome_from_params(p)
    assert g["widths"] == [8, 16, 24, 40, 80, 160] and all(w % 8 == 0 for w in g["widths"])
    model = create_model("searched_mbconv", arch_args=g)
    assert sum(len(s) for s in model.stages) == 5  # only the transitions are left
    assert model.stages[0][0].conv[0].kernel_size == (5, 5)
    with pytest.raises(ValueError, match="arch simple_effnet takes no arch_args"):
        create_model("simple_effnet", arch_args=g)
    with pytest.raises(ValueError, match=r"arch_args.repeats=\[1\]: must be a list of 5"):
        create_model("searched_mbconv", arch_args={"repeats": [1]})


def test_bad_storage_is_one_line(tmp_path, tiny_split):
    from elimnet.search import run_search

    data = _prepared(tmp_path, tiny_split)
    cfg = load_params(_params(tmp_path, storage="notadb://x"), ["mlflow.enabled=false"])
    with pytest.raises(ConfigError, match=r"^search.storage=notadb://x: must be a reachable Optuna RDB URL"):
        run_search(cfg, data, tmp_path / "s.pt", tmp_path / "s.json", progress=False)
