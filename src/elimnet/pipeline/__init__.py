"""Stage glue: each `stages/<stage>.py` script calls one `run_*` here, which reads its deps, calls the
library and writes its outs. Nothing in the library imports this package."""
