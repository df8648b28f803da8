"""Optuna NAS over the simplified-EfficientNet space (optional `search` stage)."""
from elimnet.search.space import genome_from_params, suggest_genome
from elimnet.search.study import pick_best, run_search

__all__ = ["genome_from_params", "pick_best", "run_search", "suggest_genome"]
