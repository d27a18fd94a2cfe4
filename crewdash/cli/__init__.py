"""The command line: `crewdash` and `python -m crewdash`."""
