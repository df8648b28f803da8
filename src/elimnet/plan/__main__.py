import sys

from elimnet.plan.cli import main

sys.exit(main())
