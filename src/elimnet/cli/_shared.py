"""Arguments more than one command takes (not a command: the leading `_` keeps it out of the parser)."""
from __future__ import annotations

import argparse

from elimnet.errors import ConfigError


def add_num_classes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--num-classes", type=int, default=None,
                   help="classifier size (default: the prepared data's classes, else 1000)")


def num_classes(args) -> int:
    """--num-classes, else the prepared data's class count (1000 without prepared data)."""
    from elimnet.data.prepare import default_num_classes

    n = args.num_classes if args.num_classes is not None else default_num_classes()
    if n < 2:
        raise ConfigError(f"--num-classes={n}: must be an integer >= 2")
    return n
