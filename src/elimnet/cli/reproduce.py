"""`elimnet reproduce`: this machine's metrics against the committed ones.

After `make repro`, it says metric by metric whether each value lies inside the committed interval (and the
committed value inside this machine's), and whether the verdicts agree. Exit 1 when something doesn't.
"""
from __future__ import annotations

import argparse
import json

HELP = "check this machine's metrics against the committed ones: inside their intervals, same verdict (exit 1 if not)"


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ref", default="HEAD", help="git commit holding the published metrics/summary.json")
    p.add_argument("--summary", default="metrics/summary.json", help="this machine's summary (after make repro)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    from elimnet.report.reproduce import format_report, run_reproduce

    result = run_reproduce(args.summary, args.ref)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0 if result["reproduced"] else 1
