"""The model calls one crew makes, task by task, as the budget's estimate sees them: from a YAML
blueprint's texts, or from a built CrewAI crew (a project's, a Flow's inner crew)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from crewdash.blueprints.base import BaseBlueprint, Blueprint, missing_tool_keys

if TYPE_CHECKING:
    from crewai import Crew


@dataclass(frozen=True)
class TaskShape:
    """One task as the estimate sees it."""

    text: str  # the agent's and the task's words; {placeholders} are filled from the inputs
    calls: int = 1  # 2 when its agent has tools (the call asking for one, the answer after it)
    context: int = 0  # earlier tasks whose answers its prompt carries
    manager: bool = False  # a hierarchical crew's manager calls around it (delegate, review)


@dataclass(frozen=True)
class CrewShape:
    """The model calls one crew makes, task by task."""

    tasks: tuple[TaskShape, ...]
    steps_known: bool = True  # False: a Flow decides its steps as it runs
    note: str = ""  # how it was found, when that needs saying


def crew_shape(crew: Crew) -> CrewShape:
    """The shape of a built CrewAI crew (a project's, or a Flow's inner crew)."""
    from crewai import Process

    hierarchical = crew.process == Process.hierarchical or crew.manager_agent is not None
    tasks = []
    for index, task in enumerate(crew.tasks):
        agent = task.agent
        tools = list(getattr(agent, "tools", None) or []) + list(task.tools or [])
        words = [
            getattr(agent, "role", ""),
            getattr(agent, "goal", ""),
            getattr(agent, "backstory", ""),
            task.description,
            task.expected_output,
            *(f"{t.name}: {t.description}" for t in tools),
        ]
        context = task.context if isinstance(task.context, list) else None
        tasks.append(
            TaskShape(
                "\n".join(str(w or "") for w in words),
                calls=2 if tools else 1,
                context=len(context) if context is not None else min(index, 1),
                manager=hierarchical,
            )
        )
    return CrewShape(tuple(tasks))


def _yaml_shape(blueprint: Blueprint) -> CrewShape:
    tasks = []
    for cfg in blueprint.tasks.values():
        agent = blueprint.agents.get(str(cfg.get("agent")), {})
        words = [agent.get(k, "") for k in ("role", "goal", "backstory")]
        words += [cfg.get("description", ""), cfg.get("expected_output", "")]
        context = cfg.get("context") or []
        names = list(agent.get("tools") or [])
        usable = len(names) > len(missing_tool_keys(names))  # a tool without its key is left out
        tasks.append(
            TaskShape(
                "\n".join(str(w) for w in words),
                calls=2 if usable else 1,
                context=len(context) if isinstance(context, list) else 0,
            )
        )
    return CrewShape(tuple(tasks))


def blueprint_shape(blueprint: BaseBlueprint) -> CrewShape | None:
    """The blueprint's calls, task by task, when they can be known before a run."""
    if isinstance(blueprint, Blueprint):
        return _yaml_shape(blueprint) if blueprint.tasks else None
    shape = getattr(blueprint, "shape", None)  # a project's, found when it was loaded
    return shape if isinstance(shape, CrewShape) else None
