"""CrewAI projects as blueprints: the four shapes of `crewai create`, run through the runner
against the real demo model (tests/projects holds one project of each shape, written here)."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from crewdash.base.errors import BlueprintError
from crewdash.blueprints.catalog import describe_blueprints, list_blueprints, load_blueprint
from crewdash.blueprints.projects.blueprint import ProjectBlueprint
from crewdash.demo.profiles import LatencyProfile
from crewdash.demo.server import DemoLLMServer
from crewdash.engine.plans import RunSettings
from crewdash.engine.runner import Runner
from crewdash.model.batch import BatchSnapshot, CrewSnapshot, CrewState, Span
from crewdash.providers.llm import LLMSettings
from tests.broken_projects import write_broken_projects, write_flaky_project
from tests.conftest import finish

PROJECTS = Path(__file__).resolve().parent / "projects"
KINDS = {
    "analyst_crew": "crew",
    "board_crew": "crew",
    "brief_json": "json_crew",
    "triage_flow": "flow",
    "route_flow": "flow_yaml",
}
EXTRA = {
    "analyst_crew": {"audience": "CTOs"},
    "triage_flow": {"depth": "deep"},
    "route_flow": {"mode": "deep"},
}
FILES = {
    "analyst_crew": ("report.md",),
    "board_crew": (),
    "brief_json": ("note.md",),
    "triage_flow": ("brief.md",),
    "route_flow": ("deep.md",),
}
TASKS = {
    "analyst_crew": ["gather", "measure", "brief"],
    "board_crew": ["assess", "decide"],
    "brief_json": ["scan", "edit"],
    "triage_flow": ["explain"],
    "route_flow": ["research"],
}
STEPS = {
    "triage_flow": {"intake", "choose", "deep_brief", "wrap_up"},
    "route_flow": {"pick", "deep_dive"},
}


@pytest.fixture(autouse=True)
def search_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(PROJECTS))
    outputs = tmp_path / "outputs"
    monkeypatch.setenv("CREWDASH_OUTPUTS_DIR", str(outputs))
    return outputs


def topics_for(name: str, n: int = 10) -> list[str]:
    # letters, not numbers: "subject 1" would be a substring of "subject 10"
    return [f"{name} subject {chr(65 + i)}x" for i in range(n)]


def covered(inner: Span, outer: list[Span], slack: float = 0.05) -> bool:
    assert inner.started_at is not None and inner.finished_at is not None
    return any(
        o.started_at is not None
        and o.finished_at is not None
        and o.started_at - slack <= inner.started_at
        and inner.finished_at <= o.finished_at + slack
        for o in outer
    )


def check_isolated(crew: CrewSnapshot, topics: list[str], folder: Path) -> None:
    others = [t for t in topics if t != crew.topic]
    texts = [crew.result or "", *(t.output for t in crew.tasks)]
    texts += [(folder / f).read_text(encoding="utf-8") for f in crew.files]
    assert crew.topic in (crew.result or "")
    assert not any(o in text for o in others for text in texts)


def test_every_kind_is_listed_next_to_the_built_ins() -> None:
    assert {"research", "timing", *KINDS} <= set(list_blueprints())
    infos = {i.name: i for i in describe_blueprints()}
    assert {n: infos[n].kind for n in KINDS} == KINDS
    assert all(infos[n].error is None for n in (*KINDS, "research", "timing"))


def test_inputs_and_their_defaults_come_from_the_project() -> None:
    analyst = load_blueprint("analyst_crew")
    assert dict(analyst.inputs) == {"audience": "", "topic": ""}
    assert analyst.required == {"audience", "topic"} and analyst.fan_out == "topic"
    brief = load_blueprint("brief_json")  # crew.jsonc "inputs"
    assert dict(brief.inputs) == {"tone": "plain", "topic": "AI agents"}
    assert brief.inputs_for("x") == {"tone": "plain", "topic": "x"}
    triage = load_blueprint("triage_flow")  # the state model's fields and defaults
    assert dict(triage.inputs) == {"topic": "AI agents", "depth": "quick", "route": "", "brief": ""}
    assert triage.required == frozenset()
    assert triage.inputs_for("x", {"depth": "deep", "route": ""}) == {"depth": "deep", "topic": "x"}
    route = load_blueprint("route_flow")  # json_schema properties and the declared default
    assert dict(route.inputs) == {"topic": "AI agents", "mode": "quick"}
    assert route.fan_out == "topic"
    with pytest.raises(BlueprintError, match=r"needs a value for \{audience\}"):
        analyst.inputs_for("x")


@pytest.mark.parametrize("name", list(KINDS))
def test_ten_topics_run_concurrently_each_with_its_own_inputs_outputs_and_files(
    runner: Runner, name: str, search_path: Path
) -> None:
    before = set(os.listdir(Path.cwd()))
    topics = topics_for(name)
    batch_id = runner.submit(name, topics, inputs=EXTRA.get(name))
    snap = finish(runner, batch_id, 180)
    assert [c.state for c in snap.crews] == [CrewState.SUCCEEDED] * 10, [
        c.error for c in snap.crews
    ]
    assert snap.kind == KINDS[name]
    latest_start = max(c.started_at or 0 for c in snap.crews)
    assert all((c.finished_at or 0) > latest_start for c in snap.crews), "crews ran one by one"
    for crew in snap.crews:
        assert crew.inputs["topic"] == crew.topic
        assert all(crew.inputs[k] == v for k, v in EXTRA.get(name, {}).items())
        assert [t.name for t in crew.tasks] == TASKS[name]
        assert crew.files == FILES[name]
        folder = search_path / batch_id / crew.run_id
        check_isolated(crew, topics, folder)
        llm = [s for s in crew.spans if s.kind == "llm"]
        tasks = [s for s in crew.spans if s.kind == "task"]
        assert llm and all(s.name == "crewdash-demo" for s in llm)  # the run's model, everywhere
        assert all(covered(s, tasks) for s in llm), "LLM calls sit inside their task's bar"
        if name in STEPS:
            steps = [s for s in crew.spans if s.kind == "step"]
            assert {s.name for s in steps} == STEPS[name]
            assert all(covered(t, steps) for t in tasks), "tasks sit inside their step's bar"
    if name == "analyst_crew":  # the custom BaseTool ran, through a real tool call
        assert all(c.tasks[1].output.startswith("The tool answered") for c in snap.crews)
        assert all(any(s.kind == "tool" for s in c.spans) for c in snap.crews)
    assert set(os.listdir(Path.cwd())) == before, "nothing is written to the working directory"


def test_a_project_is_imported_once_and_a_changed_file_is_picked_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    crews = tmp_path / "crews"
    shutil.copytree(PROJECTS / "brief_json", crews / "brief_copy")
    shutil.copytree(PROJECTS / "analyst_crew", crews / "analyst_copy")
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(crews))
    llm = LLMSettings()

    def tool_class(name: str, agent: int) -> type:
        crew = load_blueprint(name).recipe(llm, "http://127.0.0.1:9/v1")()
        return type(crew.agents[agent].tools[0])

    for name, agent in (("brief_copy", 0), ("analyst_copy", 1)):
        first = tool_class(name, agent)
        assert tool_class(name, agent) is first  # the module ran once, not once per crew
    tool = crews / "analyst_copy/src/analyst_crew/tools/word_counter.py"
    tool.write_text(tool.read_text().replace("Counts the words", "Counts all words"))
    os.utime(tool, (time.time() + 5, time.time() + 5))
    changed = tool_class("analyst_copy", 1)
    assert changed is not first
    assert changed.model_fields["description"].default.startswith("Counts all words")


def test_two_projects_with_the_same_package_name_do_not_clash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for folder, role in (("one", "First scout"), ("two", "Second scout")):
        home = tmp_path / folder / f"analyst_{folder}"
        shutil.copytree(PROJECTS / "analyst_crew", home)
        agents = home / "src/analyst_crew/config/agents.yaml"
        agents.write_text(agents.read_text().replace("{topic} field scout", role))
    monkeypatch.setenv("CREWDASH_CREWS_DIR", f"{tmp_path / 'one'}{os.pathsep}{tmp_path / 'two'}")
    llm = LLMSettings()
    one = load_blueprint("analyst_one").recipe(llm, None)()
    two = load_blueprint("analyst_two").recipe(llm, None)()
    assert one.agents[0].role.strip() == "First scout"
    assert two.agents[0].role.strip() == "Second scout"
    assert type(one.agents[1].tools[0]) is not type(two.agents[1].tools[0])
    assert "analyst_crew" not in __import__("sys").modules


PINNED_CREW = """
import os

from crewai import LLM, Agent, Crew, Task
from crewai.project import CrewBase, agent, crew, task


@CrewBase
class PinnedCrew:
    agents_config = "config/agents.yaml"
    tasks_config = "config/tasks.yaml"

    @agent
    def writer(self) -> Agent:
        return Agent(config=self.agents_config["writer"])

    @agent
    def critic(self) -> Agent:
        pinned = LLM(
            model="openai/crewdash-pinned",
            base_url=os.environ.get("PINNED_LLM_URL", "http://127.0.0.1:9/v1"),
            api_key="pinned-key",
        )
        return Agent(config=self.agents_config["critic"], llm=pinned)

    @task
    def write(self) -> Task:
        return Task(config=self.tasks_config["write"], agent=self.writer())

    @task
    def critique(self) -> Task:
        return Task(config=self.tasks_config["critique"], agent=self.critic())

    @crew
    def crew(self) -> Crew:
        return Crew(agents=self.agents, tasks=self.tasks)
"""


def write_pinned_project(folder: Path) -> Path:
    home = folder / "pinned_crew"
    package = home / "src" / "pinned_crew"
    (package / "config").mkdir(parents=True)
    (home / "pyproject.toml").write_text(
        '[project]\nname = "pinned_crew"\n[tool.crewai]\ntype = "crew"\n'
    )
    (package / "__init__.py").write_text("")
    (package / "crew.py").write_text(PINNED_CREW)
    (package / "config" / "agents.yaml").write_text(
        "writer:\n  role: Writer\n  goal: Write on {topic}\n  backstory: B\n"
        "critic:\n  role: Pinned critic\n  goal: Critique {topic}\n  backstory: B\n"
    )
    (package / "config" / "tasks.yaml").write_text(
        "write:\n  description: |\n    Write.\n\n    Topic: {topic}\n  expected_output: E\n"
        "critique:\n  description: |\n    Critique.\n\n    Topic: {topic}\n  expected_output: E\n"
    )
    return home


def test_agents_that_pin_a_model_keep_it_the_others_get_the_run_model(
    runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_pinned_project(tmp_path / "crews")
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(tmp_path / "crews"))
    blueprint = load_blueprint("pinned_crew")
    assert isinstance(blueprint, ProjectBlueprint)
    assert [(p.role, p.model) for p in blueprint.pinned_agents] == [
        ("Pinned critic", "crewdash-pinned")
    ]
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.2)) as pinned:
        monkeypatch.setenv("PINNED_LLM_URL", pinned.base_url)
        snap = finish(runner, runner.submit("pinned_crew", topics_for("pinned", 3)))
        assert snap.count(CrewState.SUCCEEDED) == 3
        assert pinned.stats.requests == 3  # one critique per crew, on the pinned model
    for crew in snap.crews:
        assert [s.name for s in crew.spans if s.kind == "llm"] == [
            "crewdash-demo",
            "crewdash-pinned",
        ]


def test_concurrent_batches_each_keep_their_own_model_inside_flow_steps(
    runner: Runner, demo_server: DemoLLMServer
) -> None:
    """Two batches of the same Flow at once, on two models: every inner crew's agent of each
    crew used its own batch's model (a per-run setting, not a process-wide one)."""
    with DemoLLMServer(LatencyProfile(kind="fixed", seconds=0.3)) as other:
        other_llm = LLMSettings(
            provider="openai_compatible", model="model-b", base_url=other.base_url
        )
        a = runner.submit("triage_flow", topics_for("a", 6))
        b = runner.submit("route_flow", topics_for("b", 6), RunSettings(llm=other_llm))
        c = runner.submit("triage_flow", topics_for("c", 6), RunSettings(llm=other_llm))
        snaps: dict[str, BatchSnapshot] = {
            k: finish(runner, v, 120) for k, v in zip("abc", (a, b, c))
        }
    for key, model in (("a", "crewdash-demo"), ("b", "model-b"), ("c", "model-b")):
        crews = snaps[key].crews
        assert all(c.state is CrewState.SUCCEEDED for c in crews), [c.error for c in crews]
        assert {s.name for c in crews for s in c.spans if s.kind == "llm"} == {model}


def test_each_broken_project_gets_one_message_naming_its_file_and_the_rest_keep_working(
    runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = write_broken_projects(tmp_path / "broken")
    monkeypatch.setenv("CREWDASH_CREWS_DIR", f"{PROJECTS}{os.pathsep}{tmp_path / 'broken'}")
    infos = {i.name: i for i in describe_blueprints()}  # listing never breaks
    for name, pattern in expected.items():
        message = infos[name].error or ""
        assert re.search(pattern, message), (name, message)
        assert "\n" not in message and "Traceback" not in message
        with pytest.raises(BlueprintError, match=pattern):
            load_blueprint(name)
        with pytest.raises(BlueprintError, match=pattern):
            runner.submit(name, ["x"])
    assert all(infos[n].error is None for n in (*KINDS, "research", "timing"))
    snap = finish(runner, runner.submit("brief_json", ["still works"]))
    assert snap.count(CrewState.SUCCEEDED) == 1


def test_two_different_projects_with_one_name_are_refused_naming_both_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(PROJECTS / "brief_json", tmp_path / "same" / "brief_json")
    monkeypatch.setenv("CREWDASH_CREWS_DIR", f"{PROJECTS}{os.pathsep}{tmp_path / 'same'}")
    assert load_blueprint("brief_json").kind == "json_crew"  # an identical copy is no clash
    crew_json = tmp_path / "same" / "brief_json" / "crew.jsonc"
    crew_json.write_text(crew_json.read_text().replace("plain", "formal"))
    with pytest.raises(BlueprintError, match="two different blueprints are named 'brief_json'"):
        load_blueprint("brief_json")
    infos = {i.name: i for i in describe_blueprints()}
    assert "two different blueprints" in (infos["brief_json"].error or "")
    assert infos["triage_flow"].error is None


def test_a_crew_that_raises_while_it_is_built_fails_alone(
    runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_flaky_project(tmp_path / "crews")
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(tmp_path / "crews"))
    snap = finish(runner, runner.submit("flaky_crew", topics_for("flaky", 5)))
    failed = [c for c in snap.crews if c.state is CrewState.FAILED]
    assert snap.count(CrewState.SUCCEEDED) == 4 and len(failed) == 1
    assert "fails to build on purpose" in (failed[0].error or "")


def test_inputs_left_unfilled_or_unknown_are_refused_before_anything_starts(
    runner: Runner,
) -> None:
    with pytest.raises(BlueprintError, match=r"'analyst_crew' needs a value for \{audience\}"):
        runner.submit("analyst_crew", ["x"])
    with pytest.raises(BlueprintError, match=r"has no placeholder \{nope\}"):
        runner.submit("triage_flow", ["x"], fan_out="nope")
    assert runner.batch_ids() == []


def test_a_task_file_named_from_a_topic_stays_in_its_crews_folder(
    runner: Runner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, search_path: Path
) -> None:
    home = tmp_path / "crews" / "named_files"
    shutil.copytree(PROJECTS / "brief_json", home)
    crew_json = home / "crew.jsonc"
    crew_json.write_text(crew_json.read_text().replace('"note.md"', '"notes/{topic}.md"'))
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(tmp_path / "crews"))
    topics = ["../../../escape", "/etc/evil", "plain"]
    snap = finish(runner, runner.submit("named_files", topics))
    assert snap.count(CrewState.SUCCEEDED) == 3, [c.error for c in snap.crews]
    for crew in snap.crews:
        folder = (search_path / snap.batch_id / crew.run_id).resolve()
        assert len(crew.files) == 1
        assert (folder / crew.files[0]).resolve().is_relative_to(folder)
    assert not (tmp_path / "escape.md").exists() and not Path("/etc/evil.md").exists()
    written = sorted(p.name for p in search_path.rglob("*.md"))
    assert written == ["escape.md", "evil.md", "plain.md"]


def test_a_flow_times_out_or_is_cancelled_alone_like_any_crew(runner: Runner) -> None:
    slow = RunSettings(crew_timeout_s=0.2)  # the demo model answers in 0.5 s
    snap = finish(runner, runner.submit("route_flow", ["late a", "late b"], slow))
    assert [c.state for c in snap.crews] == [CrewState.TIMED_OUT] * 2
    assert all(any(s.kind == "step" for s in c.spans) for c in snap.crews)
    batch_id = runner.submit("triage_flow", topics_for("cancel", 3))
    deadline = time.time() + 10
    while not runner.snapshot(batch_id).count(CrewState.RUNNING) and time.time() < deadline:
        time.sleep(0.02)
    victim = runner.snapshot(batch_id).crews[0].run_id
    assert runner.cancel_crew(batch_id, victim)
    snap = finish(runner, batch_id)
    assert snap.crews[0].state is CrewState.CANCELLED
    assert [c.state for c in snap.crews[1:]] == [CrewState.SUCCEEDED] * 2
