"""Every benchmark engine and its report (`python -m crewdash bench ...`)."""
