"""The `elimnet` parser is assembled from the modules of elimnet/cli/: one module per command."""
import pkgutil

import pytest

import elimnet.cli as cli


def test_every_command_module_is_a_subcommand_with_help(capsys):
    modules = sorted(m.name for m in pkgutil.iter_modules(cli.__path__) if not m.name.startswith("_"))
    assert list(cli.commands()) == modules and {"bench", "compare", "exp", "summary"} <= set(modules)
    for name in modules:
        with pytest.raises(SystemExit) as done:
            cli.main([name, "--help"])
        assert done.value.code == 0
        assert capsys.readouterr().out.startswith(f"usage: elimnet {name}")


def test_unknown_options_are_refused_except_by_a_wrapper(capsys, monkeypatch):
    with pytest.raises(SystemExit) as done:
        cli.main(["summary", "--bogus"])
    assert done.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
    seen = []
    monkeypatch.setattr(cli.commands()["exp"], "run", lambda args: seen.append(args.unknown) or 0)
    assert cli.main(["exp", "-A", "--sort-by", "test_macro_f1"]) == 0 and seen == [["-A", "--sort-by", "test_macro_f1"]]
    assert cli.main([]) == 2


def test_exp_keeps_the_varying_params_that_fit_the_width():
    from elimnet.cli.exp import columns_that_fit, varying_params

    def rev(name, **params):
        return {"rev": name * 40, "name": name, "data": {"params": {"params.yaml": {"data": params}}}}

    rows = [rev("a", seed=42, model={"elim": 2}, bench={f"x{i}": i for i in range(20)}),
            rev("b", seed=42, model={"elim": 3}, bench={f"x{i}": i + 1 for i in range(20)})]
    show = [{"rev": "workspace", "data": rows[0]["data"]},
            {"rev": "e" * 40, "name": "main", "data": rows[0]["data"],
             "experiments": [{"revs": [r]} for r in rows]}]
    varying = varying_params(show)
    assert list(varying)[0] == "model.elim" and "seed" not in varying and len(varying) == 21
    shown, left = columns_that_fit(show, 160)
    assert shown[0] == "model.elim" and left and shown + left == list(varying)
    # name column (9 + 6) + 7 headline columns of 11 + each param's width + 3, within 160
    assert 2 + 15 + 77 + sum(varying[k] + 3 for k in shown) <= 160
