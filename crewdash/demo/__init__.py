"""The demo model: an OpenAI-compatible server of the project's own, its models and limits."""
