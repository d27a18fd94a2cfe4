"""Resume controls for a batch with interrupted crews (Run and History pages)."""

from __future__ import annotations

import streamlit as st

from crewdash.base.errors import CrewdashError
from crewdash.engine.resume import interrupted, plan, resume
from crewdash.model.batch import BatchSnapshot
from crewdash.present.charts import crew_label
from ui.people import audit, person
from ui.session import runtime
from ui.text import plain


def render_resume(snap: BatchSnapshot, where: str) -> bool:
    """Offer to resume the batch's interrupted crews (all, or chosen ones) from their
    checkpoints, and a re-run from the start, with the reason, for those that cannot continue.
    True when a resume started (the caller shows the batch live)."""
    rt = runtime()
    crews = interrupted(snap)
    if not snap.done or not crews or rt.store is None:
        return False
    try:
        plans = plan(rt.store, snap)
    except CrewdashError as exc:
        st.error(plain(exc), icon=":material/error:")
        return False
    ready = [p for p in plans if p.problem is None]
    offers = [p for p in plans if p.problem is not None]
    by_id = {c.run_id: c for c in crews}
    kept = sum(p.restored_steps for p in ready)
    st.warning(
        f"{len(crews)} crew(s) were interrupted before they finished. "
        + (
            f"{len(ready)} can resume from their last checkpoint ({kept} finished "
            "steps kept, not paid again)."
            if ready
            else "None can resume from a checkpoint."
        ),
        icon=":material/restart_alt:",
    )
    if not person().may_act_on(snap.created_by):
        st.caption(
            plain(
                f"Started by {snap.created_by_name or snap.created_by or 'someone'}: only they "
                "or an admin can resume it."
            )
        )
        return False
    key = f"{where}.resume.{snap.batch_id}"
    run_ids: list[str] | None = None
    from_start: list[str] = []
    if ready:
        left, right = st.columns([1, 3])
        if left.button("Resume all interrupted", icon=":material/play_arrow:", key=f"{key}.all"):
            run_ids = [p.run_id for p in ready]
        chosen = right.multiselect(
            "Resume crews",
            [p.run_id for p in ready],
            key=f"{key}.pick",
            format_func=lambda r: crew_label(by_id[r]) if r in by_id else r,
            placeholder="pick interrupted crews to resume",
        )
        if chosen and right.button("Resume chosen", key=f"{key}.chosen"):
            run_ids = list(chosen)
    for offer in offers:
        label = crew_label(by_id[offer.run_id]) if offer.run_id in by_id else offer.run_id
        st.info(plain(f"{label} cannot resume: {offer.problem}."), icon=":material/info:")
    if offers and st.button(
        f"Re-run {len(offers)} from the start", icon=":material/replay:", key=f"{key}.rerun"
    ):
        run_ids, from_start = [p.run_id for p in offers], [p.run_id for p in offers]
    if run_ids is None:
        return False
    try:
        outcome = resume(rt, snap.batch_id, run_ids, from_start)
    except CrewdashError as exc:
        st.error(plain(exc), icon=":material/error:")
        return False
    audit("resume", f"batch {snap.batch_id}", detail=f"{len(outcome.resumed)} crews")
    st.session_state["run.resumed"] = outcome.describe()
    return bool(outcome.resumed)
