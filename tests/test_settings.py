"""The one settings object: typed, validated, documented in docs/configuration.md, the only env
reader."""

import ast
import re
from pathlib import Path
from typing import Any

import pytest

from crewdash.base.errors import SettingsError
from crewdash.base.settings import VARIABLES, Settings, load_settings
from crewdash.engine.backends.ray import RaySettings

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_and_types() -> None:
    settings = load_settings({})
    assert (settings.max_concurrency, settings.runner, settings.ray_workers) == (32, "local", 2)
    assert (settings.llm_timeout, settings.retry_tries, settings.retry_seconds) == (30, 8, 90)
    typed = load_settings({"CREWDASH_MAX_CONCURRENCY": " 7 ", "CREWDASH_RUNNER": "Ray"})
    assert (typed.max_concurrency, typed.runner) == (7, "ray")


def test_a_blank_value_means_the_default() -> None:
    assert load_settings({"CREWDASH_MAX_CONCURRENCY": "  ", "RAY_ADDRESS": ""}) == Settings()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CREWDASH_MAX_CONCURRENCY": "abc"}, "MAX_CONCURRENCY must be a whole number, got 'abc'"),
        ({"CREWDASH_MAX_CONCURRENCY": "1001"}, "MAX_CONCURRENCY must be between 1 and 1000"),
        ({"CREWDASH_LLM_TIMEOUT": "soon"}, "CREWDASH_LLM_TIMEOUT must be a number, got 'soon'"),
        ({"CREWDASH_LLM_TIMEOUT": "0"}, "CREWDASH_LLM_TIMEOUT must be between 0 and 3600"),
        ({"CREWDASH_RUNNER": "spark"}, "CREWDASH_RUNNER must be one of local, ray, got 'spark'"),
        ({"CREWDASH_DEMO_PROFILE": "warp"}, "CREWDASH_DEMO_PROFILE must be one of fixed, hosted"),
        ({"CREWDASH_RAY_WORKERS": "300"}, "CREWDASH_RAY_WORKERS must be between 1 and 256"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)) as caught:
        load_settings(env)
    assert "\n" not in str(caught.value)


def test_only_reads_just_the_variables_asked_for() -> None:
    env = {"CREWDASH_MAX_CONCURRENCY": "abc", "CREWDASH_RAY_WORKERS": "5"}
    assert load_settings(env, only={"CREWDASH_RAY_WORKERS"}).ray_workers == 5
    assert load_settings(env, only={"CREWDASH_RAY_WORKERS"}).max_concurrency == 32


def test_secrets_are_never_shown() -> None:
    env = {
        "OPENAI_API_KEY": "sk-secret-1234",
        "CREWDASH_API_TOKEN": "token-5678",
        "CREWDASH_PASSWORD": "hunter2-pw",
        "DATABASE_URL": "postgresql://u:dbpass99@h/db",
    }
    settings = load_settings(env)
    for text in (repr(settings), str(settings)):
        for secret in ("sk-secret-1234", "token-5678", "hunter2-pw", "dbpass99"):
            assert secret not in text
    dumped = str(settings.model_dump())  # a URL's password is only kept out of repr
    assert not any(s in dumped for s in ("sk-secret-1234", "token-5678", "hunter2-pw"))
    assert settings.secret("OPENAI_API_KEY") == "sk-secret-1234"
    assert settings.secret("CREWDASH_PASSWORD") == "hunter2-pw"


def test_ray_settings_parse_through_the_settings() -> None:
    assert RaySettings.from_settings(load_settings({})) == RaySettings(address=None, workers=2)
    env = {"RAY_ADDRESS": " ray://h:10001 ", "CREWDASH_RAY_WORKERS": "4"}
    parsed = RaySettings.from_settings(load_settings(env))
    assert parsed == RaySettings(address="ray://h:10001", workers=4)
    with pytest.raises(SettingsError, match="CREWDASH_RAY_WORKERS must be a whole number"):
        RaySettings.from_settings(load_settings({"CREWDASH_RAY_WORKERS": "two"}))


def _readme_table() -> dict[str, str]:
    """Variable -> default cell of docs/configuration.md's "## Environment variables" table."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    section = text.split("\n## Environment variables\n", 1)[1].split("\n## ", 1)[0]
    table: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z0-9_]+)`", cells[0])
        defaults = [d.strip().strip("`") for d in cells[1].split(",")]
        if len(defaults) == 1:
            defaults *= len(names)
        assert len(defaults) == len(names), line
        table.update(zip(names, defaults, strict=True))
    return table


def _shown_default(name: str) -> str:
    info = Settings.model_fields[name]
    extra: Any = info.json_schema_extra or {}
    if "readme_default" in extra:
        return str(extra["readme_default"])
    default = info.default
    return f"{default:g}" if isinstance(default, float) else str(default)


def test_the_readme_configuration_table_is_the_settings_object() -> None:
    table = _readme_table()
    for variable, field in VARIABLES.items():
        assert variable in table, f"{variable} is missing from docs/configuration.md's table"
        assert table[variable] == _shown_default(field), variable
    unknown = sorted(set(table) - set(VARIABLES))
    assert not unknown, f"docs/configuration.md names variables that are no setting: {unknown}"
    for info in Settings.model_fields.values():
        assert info.description, info.alias


# Writes to the environment and environments handed to a subprocess, not settings read.
ALLOWED_ENVIRON = {
    ("crewdash/base/settings.py", "load_settings"),  # the one reader
    ("crewdash/__init__.py", "_quiet_crewai"),  # writes CrewAI's and OpenTelemetry's variables
    ("crewdash/cli/main.py", "_make_backend"),  # this environment plus a runner choice, passed on
}


def _environ_uses(path: Path) -> list[tuple[str, str, int]]:
    """(file, enclosing function, line) of every os.environ / getenv / putenv use."""
    found: list[tuple[str, str, int]] = []
    relative = path.relative_to(ROOT).as_posix()

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        name = (
            node.attr
            if isinstance(node, ast.Attribute)
            else node.id
            if isinstance(node, ast.Name)
            else node.module
            if isinstance(node, ast.ImportFrom) and node.module == "os"
            else None
        )
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            if any(a.name in ("environ", "environb", "getenv") for a in node.names):
                found.append((relative, "<import>", node.lineno))
        elif name in ("environ", "environb", "getenv", "getenvb", "putenv"):
            found.append((relative, function, getattr(node, "lineno", 0)))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(path.read_text(encoding="utf-8")), "<module>")
    return found


def test_no_module_but_settings_reads_the_environment() -> None:
    files = [ROOT / "app.py"] + [
        p for folder in ("crewdash", "ui", "pages") for p in sorted((ROOT / folder).rglob("*.py"))
    ]
    uses = [u for f in files for u in _environ_uses(f)]
    assert {(f, fn) for f, fn, _ in uses} >= {("crewdash/base/settings.py", "load_settings")}
    stray = [u for u in uses if (u[0], u[1]) not in ALLOWED_ENVIRON]
    assert not stray, f"read settings through crewdash.base.settings.load_settings, not: {stray}"


# Who may call `load_settings`: the reader itself and the start-ups (composition roots). The API's
# start-up is listed whole for now; everything below them asks `process_settings`.
READ_AT_START = (
    "crewdash/base/settings.py",  # the one reader
    "crewdash/runtime.py",  # the composition root
    "crewdash/cli/",  # the CLI's start-up
    "crewdash/api/",  # the API's start-up
    "ui/session.py",  # the page's composition
)


def _load_settings_uses(path: Path) -> list[tuple[str, int]]:
    """(file, line) of every call, import or other mention of `load_settings` in `path`."""
    relative = path.relative_to(ROOT).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        else:
            continue
        if "load_settings" in names:
            found.append((relative, node.lineno))
    return found


def test_only_the_start_ups_read_the_settings() -> None:
    """Settings are read once, at start-up, and handed down (or installed for the calls that
    take no argument): no lower module reads them on its own, on a hot path or not."""
    files = [ROOT / "app.py"] + [
        p for folder in ("crewdash", "ui", "pages") for p in sorted((ROOT / folder).rglob("*.py"))
    ]
    uses = [u for f in files for u in _load_settings_uses(f)]
    assert any(f == "crewdash/runtime.py" for f, _ in uses)  # the test sees what it looks for
    stray = [u for u in uses if not u[0].startswith(READ_AT_START)]
    assert not stray, f"take the settings from the composition root, not load_settings: {stray}"


def test_the_demo_profile_choices_are_the_demo_servers_kinds() -> None:
    from typing import get_args

    from crewdash.demo.profiles import PROFILE_KINDS

    choices, _none = get_args(Settings.model_fields["demo_profile"].annotation)
    assert get_args(choices) == PROFILE_KINDS
