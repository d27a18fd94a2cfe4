#!/usr/bin/env python
from crewai import Agent, Crew, Process, Task
from crewai.flow import Flow, listen, start
from pydantic import BaseModel


class ChainState(BaseModel):
    topic: str = "AI agents"
    notes: list[str] = []


async def _one_call(step: str, topic: str, before: list[str]) -> str:
    """One crew with one task: one model call."""
    writer = Agent(
        role=f"{step} writer", goal=f"Write the {step} about {topic}", backstory="Brief."
    )
    task = Task(
        name=step,
        description=f"Write the {step} about {topic}. Earlier notes: {' | '.join(before)}",
        expected_output="Two sentences.",
        agent=writer,
    )
    crew = Crew(agents=[writer], tasks=[task], process=Process.sequential, verbose=False)
    return (await crew.akickoff()).raw


class ChainFlow(Flow[ChainState]):
    """Three steps in a row, each paying for one model call."""

    @start()
    async def outline(self) -> str:
        self.state.notes.append(await _one_call("outline", self.state.topic, self.state.notes))
        return self.state.notes[-1]

    @listen(outline)
    async def draft(self) -> str:
        self.state.notes.append(await _one_call("draft", self.state.topic, self.state.notes))
        return self.state.notes[-1]

    @listen(draft)
    async def summary(self) -> str:
        self.state.notes.append(await _one_call("summary", self.state.topic, self.state.notes))
        return self.state.notes[-1]
