"""How crewdash calls a model: LLM settings, retries, response cache, limits, the governor."""
