"""`elimnet plan`: the most accurate compression of a backbone within a latency budget on the deployed runtime.

space.py (what is searched) -> study.py (Optuna: proxy accuracy vs measured ONNX Runtime latency,
deployed.py times and caches, proxy.py scores) -> finalists.py (full finetunes over repeats) ->
summary.py + report.py (reports/plan.*). docs/plan.md explains the proxy and how to read the front.
"""
from elimnet.plan.runner import add_plan_arguments, build_parser, run_plan

__all__ = ["add_plan_arguments", "build_parser", "run_plan"]
