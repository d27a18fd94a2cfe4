"""What a crew is built from: YAML blueprints and CrewAI projects."""
