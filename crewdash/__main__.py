"""`python -m crewdash ...`: see crewdash.cli."""

import sys

from crewdash.cli import main

sys.exit(main())
