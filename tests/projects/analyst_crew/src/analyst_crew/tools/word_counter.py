"""A custom tool: counts the words of a text (deterministic, no network)."""

from crewai.tools import BaseTool
from pydantic import BaseModel, Field


class WordCounterInput(BaseModel):
    text: str = Field(description="The text whose words to count.")


class WordCounterTool(BaseTool):
    name: str = "word_counter"
    description: str = "Counts the words in a text and returns the number."
    args_schema: type[BaseModel] = WordCounterInput

    def _run(self, text: str) -> str:
        return f"{len(text.split())} words"
