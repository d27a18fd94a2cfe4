"""The wire models of the REST API and the CLI, per resource."""
