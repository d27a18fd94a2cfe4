"""The demo model's named models: each answers at its own speed and in its own style, so an
experiment comparing them shows real differences offline. Also the demo judge's deterministic
score, so a judged experiment runs without a real model.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from crewdash.base.config import DEMO_MODEL_NAME, DEMO_MODEL_NAMES


@dataclass(frozen=True)
class DemoModel:
    """One model name the demo server serves: a latency factor and how many bullets it writes."""

    name: str
    speed: float  # multiplies the server's latency profile
    bullets: int  # points per topic answer
    detail: bool  # a closing paragraph after the points
    blurb: str


DEMO_MODELS: dict[str, DemoModel] = {
    m.name: m
    for m in (
        DemoModel(DEMO_MODEL_NAME, 1.0, 3, False, "the default: three bullets"),
        DemoModel("demo-fast", 0.3, 2, False, "quick and terse: two short bullets"),
        DemoModel("demo-thorough", 2.0, 5, True, "slower and longer: five bullets and a summary"),
    )
}

assert tuple(DEMO_MODELS) == DEMO_MODEL_NAMES  # preflight accepts exactly these

# The judge blueprint's task names these lines; the demo model scores what sits between them.
JUDGE_MARKER = "Answer under review:"
_RUBRIC = re.compile(r"Rubric:\s*(.*?)\n\s*Answer under review:", re.DOTALL)
_ANSWER = re.compile(r"Answer under review:\s*(.*?)\n\s*End of answer\.", re.DOTALL)
NO_SCORE_MARKER = "[demo:no-score]"


def demo_model(name: str) -> DemoModel:
    """The named model; an unknown name behaves like the default (the server is lenient)."""
    return DEMO_MODELS.get(name, DEMO_MODELS[DEMO_MODEL_NAME])


def shape_answer(model: str, topic: str, bullets: list[str]) -> str:
    """A topic answer in `model`'s style, from the server's deterministic bullet pool."""
    style = demo_model(model)
    picked = bullets[: style.bullets]
    if style.bullets < 3:  # terse: the first clause of each point
        picked = [b.split(",")[0].rstrip(".") + "." for b in picked]
    text = "\n".join("- " + b for b in picked)
    if style.detail:
        text += (
            f"\n\nSummary: {topic} is moving quickly; the points above weigh adoption, cost, "
            "evaluation and tooling, and the safest next step is a small, measured pilot."
        )
    return text


def judge_reply(prompt: str) -> str | None:
    """The demo judge's verdict when `prompt` is a judge prompt, else None.

    The score grows with the answer's length and coverage (a longer, structured answer scores
    higher), plus a small stable offset from the rubric, so it is deterministic and differs
    between models.
    """
    if JUDGE_MARKER not in prompt:
        return None
    rubric_match, answer_match = _RUBRIC.search(prompt), _ANSWER.search(prompt)
    rubric = rubric_match.group(1).strip() if rubric_match else ""
    answer = answer_match.group(1).strip() if answer_match else ""
    if NO_SCORE_MARKER in rubric:
        return "I cannot judge this answer."
    words = len(answer.split())
    points = sum(1 for line in answer.splitlines() if line.strip().startswith("-"))
    offset = hashlib.sha256(f"{rubric}|{answer}".encode()).digest()[0] % 2
    score = max(1, min(10, 2 + words // 40 + points + offset))
    reason = f"{points} points in {words} words against the rubric"
    return f"SCORE: {score}\nREASON: {reason}"
