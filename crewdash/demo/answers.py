"""What the demo model answers: deterministic, topic-aware text in the named model's style, a
judge's verdict, an echo, or a call of an offered tool; and a stable token count for usage."""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid
from typing import Any

from crewdash.base.config import DEMO_MODEL_NAME
from crewdash.demo.models import judge_reply, shape_answer

_TOKEN = re.compile(r"\w+|[^\w\s]")
_REPLY_EXACTLY = re.compile(r"Reply with exactly:\s*(.+)")
_TOPIC_LINE = re.compile(r"^Topic:\s*(.+)$", re.MULTILINE)
# A prompt containing this marker, sent with that tool offered, gets a call of the tool first
# (once per conversation): a deterministic way to exercise a crew's custom tools.
TOOL_MARKER = re.compile(r"\[demo:tool=([A-Za-z0-9_\-]+)\]")

_BULLETS = (
    "{t} is drawing steady attention, with teams reporting faster iteration after adopting it.",
    "Recent write-ups on {t} focus on cost, reliability and fit with existing stacks.",
    "Practitioners say the hardest part of {t} is evaluation, not the initial setup.",
    "Open-source activity around {t} rose this quarter, led by tooling and integrations.",
    "Critics of {t} point to unclear benchmarks and vendor claims that are hard to verify.",
    "Analysts expect {t} to consolidate around a few well-supported options within a year.",
    "Early adopters of {t} recommend small pilots with clear success metrics before scaling.",
    "Documentation and community support for {t} improved noticeably in recent releases.",
)


def count_tokens(text: str) -> int:
    """A stable token count (words and punctuation), so usage figures are real sums of the text."""
    return len(_TOKEN.findall(text))


def message_text(message: dict[str, Any]) -> str:
    """A chat message's text (of a multimodal message, its text parts)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # multimodal parts: keep the text ones
        return "\n".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def compose_tool_call(
    messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None
) -> dict[str, Any] | None:
    """The tool call the demo model makes, if any: the tool a `[demo:tool=name]` marker in the
    prompt names, when that tool is offered and no tool has answered in this conversation yet.
    Its string arguments get the prompt's topic (or a short gist of the prompt)."""
    if not tools or any(m.get("role") == "tool" for m in messages):
        return None
    prompt = "\n".join(message_text(m) for m in messages)
    marker = TOOL_MARKER.search(prompt)
    if marker is None:
        return None
    wanted = marker.group(1)
    for tool in tools:
        function = tool.get("function") or {}
        if function.get("name") != wanted:
            continue
        topic = _TOPIC_LINE.search(prompt)
        text = topic.group(1).strip() if topic else " ".join(prompt.split())[:200]
        params = function.get("parameters") or {}
        arguments = {
            name: text
            for name, spec in (params.get("properties") or {}).items()
            if isinstance(spec, dict) and spec.get("type", "string") == "string"
        }
        return {
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {"name": wanted, "arguments": json.dumps(arguments)},
        }
    return None


def compose_answer(messages: list[dict[str, Any]], model: str = DEMO_MODEL_NAME) -> str:
    """The deterministic answer to a conversation: an echo, a judge's verdict, bullets in the
    model's style, or a short note (after a tool call, the note starts with what the tool
    answered)."""
    prompt = "\n".join(message_text(m) for m in messages)
    if messages and messages[-1].get("role") == "tool":
        said = " ".join(message_text(messages[-1]).split())[:200]
        return f"The tool answered: {said}"
    if match := _REPLY_EXACTLY.search(prompt):
        return match.group(1).strip()
    if (verdict := judge_reply(prompt)) is not None:
        return verdict
    if match := _TOPIC_LINE.search(prompt):
        topic = match.group(1).strip()
        seed = int.from_bytes(hashlib.sha256(topic.encode("utf-8")).digest()[:8], "big")
        picks = random.Random(seed).sample(_BULLETS, 5)  # a prefix of it is the 3-sample
        return shape_answer(model, topic, [b.format(t=topic) for b in picks])
    last = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    gist = " ".join(last.split())[:80] or "the request"
    return f"Simulated answer (demo model) about: {gist}"
