"""Cross-experiment comparison: the seeds' tables (Markdown, CSV) and a Pareto plot, from DVC or MLflow."""
from elimnet.report.compare import ExpRecord, comparison_rows, pareto_front, write_comparison

__all__ = ["ExpRecord", "comparison_rows", "pareto_front", "write_comparison"]
