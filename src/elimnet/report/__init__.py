"""Cross-experiment comparison: records (records) -> rows (aggregate) -> tables and a Pareto plot (render)."""
from elimnet.report.aggregate import comparison_rows, mark_pareto, pareto_front
from elimnet.report.records import ExpRecord
from elimnet.report.render import summary_table, to_csv, to_markdown, write_files

__all__ = ["ExpRecord", "comparison_rows", "mark_pareto", "pareto_front", "summary_table", "to_csv", "to_markdown",
           "write_files"]
