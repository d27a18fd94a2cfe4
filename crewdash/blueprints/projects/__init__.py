"""CrewAI projects as blueprints: their files, loading them, and their blueprint."""
