"""`python -m elimnet.cli` = the `elimnet` console script."""
import sys

from elimnet.cli import main

sys.exit(main())
