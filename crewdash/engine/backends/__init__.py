"""Where a crew runs: Ray (the local backend lives in execution)."""
