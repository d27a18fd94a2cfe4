#!/usr/bin/env python
from crewai.flow import Flow, listen, or_, router, start
from pydantic import BaseModel

from triage_flow.crews.brief_crew.brief_crew import BriefCrew


class TriageState(BaseModel):
    topic: str = "AI agents"
    depth: str = "quick"
    route: str = ""
    brief: str = ""


class TriageFlow(Flow[TriageState]):
    """Routes a topic to a deep or a quick brief; both run the inner crew."""

    @start()
    def intake(self) -> str:
        self.state.topic = self.state.topic.strip()
        return self.state.topic

    @router(intake)
    def choose(self) -> str:
        self.state.route = "deep" if self.state.depth == "deep" else "quick"
        return self.state.route

    @listen("deep")
    async def deep_brief(self) -> str:
        result = (
            await BriefCrew().crew().akickoff(inputs={"topic": self.state.topic, "depth": "deep"})
        )
        self.state.brief = result.raw
        return result.raw

    @listen("quick")
    async def quick_brief(self) -> str:
        result = (
            await BriefCrew().crew().akickoff(inputs={"topic": self.state.topic, "depth": "quick"})
        )
        self.state.brief = result.raw
        return result.raw

    @listen(or_(deep_brief, quick_brief))
    def wrap_up(self) -> str:
        return f"[{self.state.route}] {self.state.brief}"


def kickoff() -> None:
    TriageFlow().kickoff()
