"""The README is a front door and docs/ is the house behind it: the README stays short, keeps
its two commands, every link in it and in docs/ leads somewhere, every page of docs/ is reachable
from it, and the module list of docs/architecture.md is the package as it is."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = sorted([README, *DOCS.glob("*.md")])
TWO_COMMANDS = (
    "bash scripts/start.sh   # installs into ./.venv and starts the dashboard"
    " (http://localhost:8501)\n"
    "bash scripts/test.sh    # installs test dependencies (and Debian's chromium as root),"
    " runs every test\n"
)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> str:
    """The text without fenced code blocks and inline code, where a `[x](y)` is no link."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def _links(page: Path) -> list[str]:
    return LINK.findall(_prose(page.read_text(encoding="utf-8")))


def _relative(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not target.startswith("#")


def _anchor(heading: str) -> str:
    """GitHub's id of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.M | re.S)
    return {_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def test_the_readme_is_a_front_door_of_at_most_200_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move the detail into docs/"


def test_the_readme_keeps_its_two_commands() -> None:
    assert f"```bash\n{TWO_COMMANDS}```" in README.read_text(encoding="utf-8")
    assert "exec bash scripts/test.sh\n" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_leads_to_a_file(page: Path) -> None:
    broken = []
    for target in filter(_relative, _links(page)):
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve()
        if not resolved.exists():
            broken.append(target)
        elif fragment and resolved.suffix == ".md" and fragment not in _anchors(resolved):
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to what is not there: {broken}"


def test_every_docs_page_is_linked_from_the_readme_or_the_docs_index() -> None:
    linked = set()
    for page in (README, DOCS / "README.md"):
        for target in filter(_relative, _links(page)):
            linked.add((page.parent / target.partition("#")[0]).resolve())
    unlinked = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not unlinked, f"docs pages nobody links to: {unlinked}"


def test_every_core_path_the_docs_name_exists() -> None:
    missing = set()
    for page in PAGES:
        for path in re.findall(r"crewdash/[\w/]*\w(?:\.py|/)", page.read_text(encoding="utf-8")):
            if not (ROOT / path).exists():
                missing.add(f"{page.relative_to(ROOT)}: {path}")
    assert not missing, f"the docs name files that are not there: {sorted(missing)}"


def _architecture_modules() -> set[str]:
    """The modules of the tree in docs/architecture.md: `  pkg/` opens a package, `    m.py` is
    one of its modules, `  m.py` one of the core's top level."""
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    tree = text.split("\ncrewdash/ ", 1)[1].split("```", 1)[0]
    listed, package = set(), ""
    for line in tree.splitlines():
        match = re.match(r"^( {2}| {4})(\S+)", line)
        if not match:
            continue
        indent, name = match.groups()
        if len(indent) == 2:
            package = name if name.endswith("/") else ""
            if name.endswith(".py"):
                listed.add(name)
        elif name.endswith(".py"):
            listed.add(package + name)
    return listed


def test_the_architecture_lists_every_module_once_per_package() -> None:
    core = ROOT / "crewdash"
    actual = {
        path.relative_to(core).as_posix()
        for path in core.rglob("*.py")
        if "migrations" not in path.parts
        and not (path.name == "__init__.py" and path.parent != core)
    }
    listed = _architecture_modules()
    missing = sorted(actual - listed)
    assert not missing, f"modules missing from docs/architecture.md: {missing}"
    gone = {m for m in listed - actual if not (core / m).exists()}
    assert not gone, f"docs/architecture.md lists modules that are gone: {sorted(gone)}"
