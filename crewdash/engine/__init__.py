"""Running crews: the runner, admission, execution, events, budgets, checkpoints and backends."""
