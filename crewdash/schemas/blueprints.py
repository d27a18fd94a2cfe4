"""The wire models of `GET /blueprints`: each blueprint on the search path, its inputs and
the agents that keep their own model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from crewdash.schemas.common import WireModel

if TYPE_CHECKING:
    from crewdash.blueprints.base import PinnedAgent
    from crewdash.blueprints.catalog import BlueprintInfo


class PinnedAgentInfo(WireModel):
    """An agent that keeps its own model, whatever the run's model is."""

    role: str
    model: str
    where: str = Field(description="the inner crew or Flow step it belongs to, if any")

    @classmethod
    def from_pin(cls, pin: PinnedAgent) -> PinnedAgentInfo:
        return cls(role=pin.role, model=pin.model, where=pin.where)


class BlueprintDescription(WireModel):
    """One blueprint of `GET /blueprints`; a broken one has its `error` and empty inputs."""

    name: str
    kind: str
    error: str | None
    inputs: dict[str, str] = Field(default_factory=dict, description="name -> default")
    required: list[str] = Field(default_factory=list)
    fan_out: str | None = Field(default=None, description="the input each topic fills")
    pinned_agents: list[PinnedAgentInfo] = Field(default_factory=list)

    @classmethod
    def from_info(cls, info: BlueprintInfo) -> BlueprintDescription:
        bp = info.blueprint
        if bp is None:
            return cls(name=info.name, kind=info.kind, error=info.error)
        return cls(
            name=info.name,
            kind=info.kind,
            error=None,
            inputs=dict(bp.inputs),
            required=sorted(bp.required),
            fan_out=bp.fan_out,
            pinned_agents=[PinnedAgentInfo.from_pin(p) for p in bp.pinned_agents],
        )
