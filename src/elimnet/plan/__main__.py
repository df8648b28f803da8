import sys

from elimnet.plan.runner import main

sys.exit(main())
