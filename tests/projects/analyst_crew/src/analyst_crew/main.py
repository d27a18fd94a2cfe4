#!/usr/bin/env python
from analyst_crew.crew import AnalystCrew


def run() -> None:
    AnalystCrew().crew().kickoff(inputs={"topic": "AI agents", "audience": "engineers"})
