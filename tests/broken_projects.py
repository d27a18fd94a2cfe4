"""Broken CrewAI projects, one per way a team's project can be wrong, written into a folder.

`write_broken_projects` returns each project's name and a pattern its one-line message must
match (the file at fault, and the line where there is one).
"""

from __future__ import annotations

import shutil
from pathlib import Path

PROJECTS = Path(__file__).resolve().parent / "projects"
CREW_TOML = '[project]\nname = "{name}"\n\n[tool.crewai]\ntype = "crew"\n'
FLOW_TOML = '[project]\nname = "{name}"\n\n[tool.crewai]\ntype = "flow"\n'
GOOD_CREW = """from crewai import Agent, Crew, Task
from crewai.project import CrewBase, agent, crew, task


@CrewBase
class Good:
    @agent
    def a(self) -> Agent:
        return Agent(config=self.agents_config["a"])

    @task
    def t(self) -> Task:
        return Task(config=self.tasks_config["t"], agent=self.a())

    @crew
    def crew(self) -> Crew:
        return Crew(agents=self.agents, tasks=self.tasks)
"""
AGENTS = "a:\n  role: R\n  goal: G {topic}\n  backstory: B\n"
TASKS = "t:\n  description: |\n    D\n\n    Topic: {topic}\n  expected_output: E\n"


def classic(folder: Path, name: str, crew_py: str, agents: str | None = AGENTS) -> Path:
    home = folder / name
    package = home / "src" / name
    (package / "config").mkdir(parents=True)
    (home / "pyproject.toml").write_text(CREW_TOML.format(name=name))
    (package / "__init__.py").write_text("")
    (package / "crew.py").write_text(crew_py)
    if agents is not None:
        (package / "config" / "agents.yaml").write_text(agents)
    (package / "config" / "tasks.yaml").write_text(TASKS)
    return home


def write_broken_projects(folder: Path) -> dict[str, str]:
    expected: dict[str, str] = {}
    classic(folder, "bad_syntax", "from crewai import Agent\n\ndef oops(:\n    pass\n")
    expected["bad_syntax"] = r"^bad_syntax/src/bad_syntax/crew\.py line 3: syntax error"
    classic(folder, "bad_dependency", "import no_such_package_xyz\n" + GOOD_CREW)
    expected["bad_dependency"] = (
        r"^bad_dependency/src/bad_dependency/crew\.py line 1: "
        r"missing dependency 'no_such_package_xyz'"
    )
    classic(folder, "bad_no_class", "X = 1\n")
    expected["bad_no_class"] = r"^bad_no_class/src/bad_no_class/crew\.py: no @CrewBase class"
    classic(folder, "bad_yaml", GOOD_CREW, agents="a:\n  role: [unclosed\n  goal: G\n")
    expected["bad_yaml"] = r"^bad_yaml/src/bad_yaml/config/agents\.yaml line \d+: "
    classic(folder, "bad_missing_yaml", GOOD_CREW, agents=None)
    expected["bad_missing_yaml"] = (
        r"^bad_missing_yaml/src/bad_missing_yaml/config/agents\.yaml is missing"
    )

    flow = folder / "bad_no_flow"
    (flow / "src" / "bad_no_flow").mkdir(parents=True)
    (flow / "pyproject.toml").write_text(FLOW_TOML.format(name="bad_no_flow"))
    (flow / "src" / "bad_no_flow" / "__init__.py").write_text("")
    (flow / "src" / "bad_no_flow" / "main.py").write_text("def kickoff():\n    pass\n")
    expected["bad_no_flow"] = r"^bad_no_flow/src/bad_no_flow/main\.py: no Flow subclass"

    shutil.copytree(PROJECTS / "brief_json", folder / "bad_json")
    crew_json = folder / "bad_json" / "crew.jsonc"
    crew_json.write_text(crew_json.read_text().replace('"agents":', '"agents" ['))
    expected["bad_json"] = r"^bad_json/crew\.jsonc: invalid JSON at line \d+, column \d+"

    shutil.copytree(PROJECTS / "brief_json", folder / "bad_definition")
    toml = folder / "bad_definition" / "pyproject.toml"
    toml.write_text(toml.read_text().replace('"crew.jsonc"', '"nowhere.jsonc"'))
    expected["bad_definition"] = (
        r"^bad_definition/pyproject\.toml: .*definition must point to an existing file"
    )

    shutil.copytree(PROJECTS / "route_flow", folder / "bad_flow_yaml")
    flow_yaml = folder / "bad_flow_yaml" / "src" / "route_flow" / "flow.yaml"
    flow_yaml.write_text(flow_yaml.read_text().replace("methods:", "methods: [\n"))
    expected["bad_flow_yaml"] = r"^bad_flow_yaml/src/route_flow/flow\.yaml line \d+: "

    (folder / "bad_toml").mkdir()
    (folder / "bad_toml" / "pyproject.toml").write_text("[tool.crewai\ntype = 'crew'\n")
    expected["bad_toml"] = r"^bad_toml/pyproject\.toml: .*line 1"
    return expected


FLAKY_CREW = GOOD_CREW.replace(
    "    @crew\n    def crew(self) -> Crew:\n",
    "    @crew\n    def crew(self) -> Crew:\n"
    "        if next(BUILDS) == 3:\n"
    '            raise RuntimeError("this crew fails to build on purpose")\n',
).replace("from crewai import", "import itertools\n\nfrom crewai import") + (
    "\n\nBUILDS = itertools.count()\n"
)


def write_flaky_project(folder: Path) -> Path:
    """A crew whose build raises once (its fourth build: the probe is the first)."""
    return classic(folder, "flaky_crew", FLAKY_CREW)
