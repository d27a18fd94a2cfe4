"""`python -m crewdash ...`, the same as the installed `crewdash` command: see crewdash.cli.main."""

import sys

from crewdash.cli.main import main

sys.exit(main(prog="python -m crewdash"))
