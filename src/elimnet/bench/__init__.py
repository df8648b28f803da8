"""Model size and speed: params/MACs (profile), latency per backend (backends, latency), memory.

Kept free of torch imports so that the report code can read benchmark results without it.
"""
from elimnet.bench.backends import BACKENDS  # noqa: F401 - measured and reported in this order
