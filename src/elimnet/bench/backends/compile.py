"""torch.compile (inductor) on CPU, switched on by bench.compile."""
from __future__ import annotations

from elimnet.bench.backends import register_backend, switched_off
from elimnet.bench.backends.cpu import eager_cpu
from elimnet.fields import Field, is_bool

register_backend("compile", lambda *a: eager_cpu(*a, compile_=True), device="cpu", order=40,
                 unavailable=switched_off("bench.compile"),
                 params={"bench.compile": Field(False, is_bool, "also time torch.compile (inductor) on CPU")},
                 help="torch.compile (inductor) on CPU")
