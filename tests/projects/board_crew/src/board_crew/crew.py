from crewai import Agent, Crew, Process, Task
from crewai.agents.agent_builder.base_agent import BaseAgent
from crewai.project import CrewBase, agent, crew, task


@CrewBase
class BoardCrew:
    """Two specialists and a chair who manages them (hierarchical process)."""

    agents: list[BaseAgent]
    tasks: list[Task]

    @agent
    def economist(self) -> Agent:
        return Agent(config=self.agents_config["economist"], verbose=False)  # type: ignore[index]

    @agent
    def engineer(self) -> Agent:
        return Agent(config=self.agents_config["engineer"], verbose=False)  # type: ignore[index]

    def chair(self) -> Agent:
        return Agent(
            role="Board chair",
            goal="Get a sound decision out of the board",
            backstory="You run the meeting and keep it short.",
            allow_delegation=True,
            verbose=False,
        )

    @task
    def assess(self) -> Task:
        return Task(config=self.tasks_config["assess"])  # type: ignore[index]

    @task
    def decide(self) -> Task:
        return Task(config=self.tasks_config["decide"])  # type: ignore[index]

    @crew
    def crew(self) -> Crew:
        return Crew(
            agents=self.agents,
            tasks=self.tasks,
            process=Process.hierarchical,
            manager_agent=self.chair(),
            verbose=False,
        )
