"""`elimnet plan`: the most accurate compression within a latency budget on ONNX Runtime (docs/plan.md).

The study, the timing cache and the outputs live in elimnet.plan; this module only plugs it into `elimnet`.
"""
from __future__ import annotations

from elimnet.plan.runner import add_plan_arguments as configure  # noqa: F401  (the command's interface)
from elimnet.plan.runner import run_plan as run  # noqa: F401

HELP = "the most accurate compression within a latency budget on ONNX Runtime (docs/plan.md)"
