import os
import shutil
from pathlib import Path

import pytest
from crewai import LLM

from crewdash.base.config import CREWS_DIR
from crewdash.base.errors import BlueprintError
from crewdash.blueprints.base import PLACEHOLDER
from crewdash.blueprints.catalog import builtin_blueprint, list_blueprints, load_blueprint


def llm() -> LLM:
    return LLM(model="openai/crewdash-demo", base_url="http://127.0.0.1:9/v1", api_key="k")


def write(tmp_path: Path, name: str, agents: str, tasks: str) -> Path:
    config = tmp_path / name / "config"
    config.mkdir(parents=True)
    (config / "agents.yaml").write_text(agents)
    (config / "tasks.yaml").write_text(tasks)
    return tmp_path


def test_shipped_blueprints_are_listed() -> None:
    assert {"judge", "research", "timing"} <= set(list_blueprints())


@pytest.mark.parametrize("name", list_blueprints())
def test_every_placeholder_of_a_shipped_blueprint_gets_an_input(name: str) -> None:
    bp = load_blueprint(name)
    inputs = bp.inputs_for("some topic", {n: "a value" for n in bp.required})  # judge: rubric…
    for section in (bp.agents, bp.tasks):
        for cfg in section.values():
            for value in cfg.values():
                if isinstance(value, str):
                    assert set(PLACEHOLDER.findall(value)) <= inputs.keys()


def test_research_matches_the_tutorial() -> None:
    bp = load_blueprint("research")
    agent = bp.agents["researcher"]
    assert agent["role"] == "Research Analyst"
    assert agent["goal"] == "Find the latest developments on {topic}"
    assert bp.fan_out == "topic"


def test_build_gives_fresh_agents_and_tasks_every_time() -> None:
    bp = load_blueprint("research")
    one, two = bp.build(llm()), bp.build(llm())
    assert one.agents[0] is not two.agents[0]
    assert one.agents[0].id != two.agents[0].id
    assert one.tasks[0].id != two.tasks[0].id
    assert one.tasks[0].agent is one.agents[0]


def test_multi_agent_blueprint_with_task_context(tmp_path: Path) -> None:
    crews = write(
        tmp_path,
        "duo",
        "a:\n  role: R1\n  goal: G {topic}\n  backstory: B\n"
        "b:\n  role: R2\n  goal: G2\n  backstory: B2 for {audience}\n",
        "first:\n  description: D {topic}\n  expected_output: E\n  agent: a\n"
        "second:\n  description: D2\n  expected_output: E2\n  agent: b\n  context: [first]\n",
    )
    bp = load_blueprint("duo", crews)
    assert bp.placeholders == {"topic", "audience"}
    with pytest.raises(BlueprintError, match=r"needs a value for \{audience\}"):
        bp.inputs_for("x")
    assert bp.inputs_for("x", {"audience": "CTOs"}) == {"topic": "x", "audience": "CTOs"}
    crew = bp.build(llm())
    assert crew.tasks[1].context == [crew.tasks[0]]
    assert crew.tasks[1].agent is crew.agents[1]


def test_fan_out_falls_back_to_first_placeholder(tmp_path: Path) -> None:
    crews = write(
        tmp_path,
        "c",
        "a:\n  role: R\n  goal: G {subject}\n  backstory: B\n",
        "t:\n  description: D {subject}\n  expected_output: E\n  agent: a\n",
    )
    assert load_blueprint("c", crews).fan_out == "subject"


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    crews = write(tmp_path, "bad", "a:\n  role: [unclosed\n", "t: {}\n")
    with pytest.raises(BlueprintError, match=r"agents.yaml at line \d+, column \d+"):
        load_blueprint("bad", crews)


@pytest.mark.parametrize(
    "agents, tasks, message",
    [
        (
            "a:\n  role: R\n  goal: G\n",
            "t:\n  description: D\n  expected_output: E\n  agent: a\n",
            "agent 'a' needs backstory",
        ),
        (
            "a:\n  role: R\n  goal: G\n  backstory: B\n",
            "t:\n  description: D\n  expected_output: E\n  agent: zed\n",
            "unknown agent 'zed'",
        ),
        (
            "a:\n  role: R\n  goal: G\n  backstory: B\n",
            "t:\n  description: D\n  expected_output: E\n  agent: a\n  context: [later]\n",
            "context must list tasks defined above it",
        ),
        ("- just\n- a list\n", "t: {}\n", "expected a mapping"),
        ("a: text\n", "t: {}\n", "entry 'a' must be a mapping"),
    ],
)
def test_malformed_blueprints_are_refused_in_plain_words(
    tmp_path: Path, agents: str, tasks: str, message: str
) -> None:
    crews = write(tmp_path, "bad", agents, tasks)
    with pytest.raises(BlueprintError, match=message):
        load_blueprint("bad", crews)


@pytest.mark.parametrize("name", ["../etc", "nope", "a/b", ""])
def test_unknown_or_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(BlueprintError):
        load_blueprint(name, CREWS_DIR)


def test_unknown_tools_are_refused(tmp_path: Path) -> None:
    crews = write(
        tmp_path,
        "t",
        "a:\n  role: R\n  goal: G\n  backstory: B\n  tools: [laser]\n",
        "t:\n  description: D\n  expected_output: E\n  agent: a\n",
    )
    with pytest.raises(BlueprintError, match="tools must be a list of: serper_dev"):
        load_blueprint("t", crews)


def test_web_search_is_attached_only_with_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from crewdash.blueprints.base import missing_tool_keys

    bp = load_blueprint("research")
    assert bp.tool_names == ["serper_dev"]
    monkeypatch.delenv("SERPER_API_KEY", raising=False)
    assert missing_tool_keys(bp.tool_names) == [("serper_dev", "SERPER_API_KEY")]
    assert bp.build(llm()).agents[0].tools == []
    monkeypatch.setenv("SERPER_API_KEY", "test-key-not-used")
    assert missing_tool_keys(bp.tool_names) == []
    (tool,) = bp.build(llm()).agents[0].tools
    assert type(tool).__name__ == "SerperDevTool"


MINE = (
    "a:\n  role: R\n  goal: G {x}\n  backstory: B\n",
    "t:\n  description: D {x}\n  expected_output: E\n  agent: a\n",
)


def test_user_folders_add_to_the_built_in_blueprints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    write(one, "mine", *MINE)
    write(two, "theirs", *MINE)
    monkeypatch.setenv("CREWDASH_CREWS_DIR", f"{one}{os.pathsep}{two}")
    assert list_blueprints() == ["judge", "mine", "research", "theirs", "timing"]
    assert load_blueprint("mine").fan_out == "x"
    assert load_blueprint("theirs").fan_out == "x"
    assert load_blueprint("timing").fan_out == "topic"
    assert load_blueprint("research").fan_out == "topic"
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(tmp_path / "no-such-folder"))
    assert {"research", "timing"} <= set(list_blueprints())
    with pytest.raises(BlueprintError, match=r"no blueprint named 'mine' in .*no-such-folder"):
        load_blueprint("mine")


def test_a_name_in_two_folders_is_an_error_for_that_name_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "research", *MINE)
    write(tmp_path, "mine", *MINE)
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(tmp_path))
    assert list_blueprints() == ["judge", "mine", "research", "timing"]
    with pytest.raises(BlueprintError) as caught:
        load_blueprint("research")
    message = str(caught.value)
    assert "two different blueprints are named 'research'" in message
    assert str(CREWS_DIR) in message and str(tmp_path) in message
    assert load_blueprint("mine").fan_out == "x"
    assert load_blueprint("timing").fan_out == "topic"


def test_built_ins_never_depend_on_the_users_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "timing", *MINE)
    monkeypatch.setenv("CREWDASH_CREWS_DIR", str(tmp_path))
    with pytest.raises(BlueprintError, match="two different blueprints are named 'timing'"):
        load_blueprint("timing")
    assert builtin_blueprint("timing").fan_out == "topic"


def test_a_copy_of_a_built_in_or_the_built_in_folder_itself_is_no_clash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(CREWS_DIR / "timing", tmp_path / "timing")
    monkeypatch.setenv("CREWDASH_CREWS_DIR", f"{tmp_path}{os.pathsep}{CREWS_DIR}")
    assert load_blueprint("timing").fan_out == "topic"
    assert list_blueprints() == ["judge", "research", "timing"]


def test_fan_out_can_be_chosen(tmp_path: Path) -> None:
    crews = write(
        tmp_path,
        "c",
        "a:\n  role: R {who}\n  goal: G {what}\n  backstory: B\n",
        "t:\n  description: D {what}\n  expected_output: E\n  agent: a\n",
    )
    bp = load_blueprint("c", crews)
    assert bp.inputs_for("x", {"what": "w", "junk": "j"}, fan_out="who") == {
        "who": "x",
        "what": "w",
    }
    with pytest.raises(BlueprintError, match="has no placeholder"):
        bp.inputs_for("x", fan_out="nope")
