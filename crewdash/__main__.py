"""`python -m crewdash ...`, the same as the installed `crewdash` command: see crewdash.cli."""

import sys

from crewdash.cli import main

sys.exit(main(prog="python -m crewdash"))
