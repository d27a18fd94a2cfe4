from crewai import Agent, Crew, Process, Task
from crewai.agents.agent_builder.base_agent import BaseAgent
from crewai.project import CrewBase, agent, crew, task

from analyst_crew.tools.word_counter import WordCounterTool


@CrewBase
class AnalystCrew:
    """Scout, counter and writer; tasks are bound to agents here, not in tasks.yaml."""

    agents: list[BaseAgent]
    tasks: list[Task]

    @agent
    def scout(self) -> Agent:
        return Agent(config=self.agents_config["scout"], verbose=False)  # type: ignore[index]

    @agent
    def counter(self) -> Agent:
        return Agent(
            config=self.agents_config["counter"],  # type: ignore[index]
            tools=[WordCounterTool()],
            verbose=False,
        )

    @agent
    def writer(self) -> Agent:
        return Agent(config=self.agents_config["writer"], verbose=False)  # type: ignore[index]

    @task
    def gather(self) -> Task:
        return Task(config=self.tasks_config["gather"], agent=self.scout())  # type: ignore[index]

    @task
    def measure(self) -> Task:
        return Task(
            config=self.tasks_config["measure"],  # type: ignore[index]
            agent=self.counter(),
            context=[self.gather()],
        )

    @task
    def brief(self) -> Task:
        return Task(
            config=self.tasks_config["brief"],  # type: ignore[index]
            agent=self.writer(),
            context=[self.gather(), self.measure()],
            output_file="report.md",
        )

    @crew
    def crew(self) -> Crew:
        return Crew(agents=self.agents, tasks=self.tasks, process=Process.sequential, verbose=False)
