"""A six-task CrewAI project (the `crewai create crew` shape) for the budget tests."""

from __future__ import annotations

from pathlib import Path

TASKS = ("scan", "sort", "check", "draft", "review", "publish")

CREW_PY = '''from crewai import Agent, Crew, Process, Task
from crewai.agents.agent_builder.base_agent import BaseAgent
from crewai.project import CrewBase, agent, crew, task


@CrewBase
class SixCrew:
    """Six tasks in a row, two agents."""

    agents: list[BaseAgent]
    tasks: list[Task]

    @agent
    def analyst(self) -> Agent:
        return Agent(config=self.agents_config["analyst"], verbose=False)

    @agent
    def editor(self) -> Agent:
        return Agent(config=self.agents_config["editor"], verbose=False)
{tasks}
    @crew
    def crew(self) -> Crew:
        return Crew(agents=self.agents, tasks=self.tasks, process=Process.sequential, verbose=False)
'''

TASK_PY = """
    @task
    def {name}(self) -> Task:
        return Task(config=self.tasks_config["{name}"])
"""


def six_task_project(folder: Path, name: str = "six_crew") -> Path:
    """Write the project into `folder/name` and return its folder."""
    root = folder / name
    package = root / "src" / name
    (package / "config").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        f'[project]\nname = "{name}"\nversion = "0.1.0"\ndependencies = ["crewai>=1.15"]\n\n'
        '[tool.crewai]\ntype = "crew"\n',
        encoding="utf-8",
    )
    (package / "__init__.py").write_text("", encoding="utf-8")
    tasks = "".join(TASK_PY.format(name=t) for t in TASKS)
    (package / "crew.py").write_text(CREW_PY.replace("{tasks}", tasks), encoding="utf-8")
    (package / "config" / "agents.yaml").write_text(
        "analyst:\n  role: '{topic} analyst'\n  goal: Know {topic} well\n"
        "  backstory: You read everything on {topic}.\n"
        "editor:\n  role: Editor\n  goal: Make the notes on {topic} short\n"
        "  backstory: You cut every word that does not earn its place.\n",
        encoding="utf-8",
    )
    lines = []
    for index, task in enumerate(TASKS):
        agent = "analyst" if index % 2 == 0 else "editor"
        lines.append(
            f"{task}:\n  description: |\n"
            f"    Step {index + 1} ({task}) of the brief on {{topic}}.\n\n"
            f"    Topic: {{topic}}\n  expected_output: Three bullet points on {{topic}}.\n"
            f"  agent: {agent}\n"
        )
    (package / "config" / "tasks.yaml").write_text("\n".join(lines), encoding="utf-8")
    return root
