"""A custom tool for the JSON crew (`custom:stamp`)."""

from crewai.tools import BaseTool


class StampTool(BaseTool):
    name: str = "stamp"
    description: str = "Returns a fixed stamp for a text."

    def _run(self, text: str = "") -> str:
        return f"stamped: {text[:20]}"
