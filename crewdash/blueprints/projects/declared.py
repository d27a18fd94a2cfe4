"""A declarative Flow (`flow.yaml`) read for what it will call, before any run: the agents of
its steps that pin their own model, and its crews' tasks as a shape for a budget's estimate."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from crewdash.blueprints.base import PinnedAgent
from crewdash.blueprints.shape import CrewShape, TaskShape


def _declared_steps(definition: Any) -> Iterator[tuple[str, dict[str, Any], str, dict[str, Any]]]:
    """A declarative flow's steps that call a crew or an agent: (method, its spec, what it
    calls, the body of the call)."""
    for method, spec in definition.model_dump(mode="python").get("methods", {}).items():
        action = spec.get("do") or {}
        body = action.get("with_") or action.get("with") or {}
        if isinstance(body, dict):
            yield method, spec, str(action.get("call")), body


def _inline_agents(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An inline crew's agents by name (a mapping or a list of them)."""
    agents = body.get("agents") or {}
    items = agents.items() if isinstance(agents, dict) else enumerate(agents)
    return {str(k): a for k, a in items if isinstance(a, dict)}


def declared_pins(definition: Any) -> list[PinnedAgent]:
    """Agents of a declarative flow's inline crews and agent steps that name their own llm."""
    pins = []
    for method, _, call, body in _declared_steps(definition):
        if call == "crew":
            candidates = list(_inline_agents(body).items())
        elif call == "agent":
            candidates = [(method, body)]
        else:
            continue
        for key, agent in candidates:
            llm = agent.get("llm") or (agent.get("settings") or {}).get("llm")
            if llm:
                model = llm.get("model", "?") if isinstance(llm, dict) else str(llm)
                pins.append(PinnedAgent(str(agent.get("role") or key).strip(), model, method))
    return pins


def _words(value: Any) -> str:
    """Every string in a declared step (its agents' and tasks' texts), one per line."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "\n".join(_words(v) for v in value.values())
    if isinstance(value, list):
        return "\n".join(_words(v) for v in value)
    return ""


def declared_shape(definition: Any) -> CrewShape | None:
    """A declarative flow's model calls: each crew step's tasks, each agent step's call. With a
    router only some steps run: the estimate is then its largest step (a floor)."""
    steps: list[tuple[TaskShape, ...]] = []
    routed = False
    for spec in definition.model_dump(mode="python").get("methods", {}).values():
        routed = routed or bool(spec.get("router"))
    for _, _, call, body in _declared_steps(definition):
        if call == "crew":
            tasks = body.get("tasks") or []
            by_name = _inline_agents(body)
            shaped = []
            for index, task in enumerate(t for t in tasks if isinstance(t, dict)):
                agent = by_name.get(str(task.get("agent")), {})
                tools = agent.get("tools") or task.get("tools")
                context = task.get("context")
                shaped.append(
                    TaskShape(
                        _words(agent) + "\n" + _words(task),
                        calls=2 if tools else 1,
                        context=len(context) if isinstance(context, list) else min(index, 1),
                    )
                )
            steps.append(tuple(shaped))
        elif call == "agent":
            steps.append((TaskShape(_words(body)),))
    steps = [s for s in steps if s]
    if not steps:
        return None
    if routed:
        largest = max(steps, key=lambda s: sum(len(t.text) * t.calls for t in s))
        note = f"a routed declarative Flow: its largest of {len(steps)} steps"
        return CrewShape(largest, steps_known=False, note=note)
    return CrewShape(tuple(t for s in steps for t in s))
