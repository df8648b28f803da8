"""What the Optuna studies of this project share (the NAS search stage and `elimnet plan`).

A study's trials are only comparable on one problem (data, recipe, machine setting), so the first run
records the problem and later runs must match it. A leaf: imports only elimnet.errors.
"""
from __future__ import annotations

from elimnet.errors import ConfigError


def check_same_problem(study, problem: dict, option: str) -> None:
    """Record `problem` on a new study; refuse, naming `option` (how the user names the study), to mix
    trials of another problem into an existing one."""
    old = study.user_attrs.get("problem")
    if old is None:
        study.set_user_attr("problem", problem)
    elif old != problem:
        diff = {k: (old.get(k), v) for k, v in problem.items() if old.get(k) != v}
        raise ConfigError(f"{option}={study.study_name}: already holds trials of another problem (old, new) "
                          f"{diff}; pick a new {option} name")
