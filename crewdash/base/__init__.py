"""What every layer may use: errors, settings, configuration, locks and the per-crew run context."""
