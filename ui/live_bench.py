"""Times the Run page's live section on real snapshots, server-side: Streamlit's `AppTest` runs
the same render functions the page's fragment runs (answer cards, headline, status table,
charts, results) and the time of each run is what one refresh costs the server.

`python -m ui.live_bench SNAPSHOTS.pickle` prints the timings as JSON; the streaming
benchmark (`python -m crewdash bench --stream`) calls it on the snapshots it kept.
"""

from __future__ import annotations

import json
import pickle
import statistics
import sys
import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

from crewdash.model.batch import BatchSnapshot


def _live_section() -> None:  # runs as the AppTest script
    import streamlit as st

    from ui.batch_view import render_batch
    from ui.stream_view import render_live_answers

    snap = st.session_state["bench.snapshot"]
    render_live_answers(snap)
    render_batch(snap)


def time_refreshes(snapshots: list[BatchSnapshot]) -> list[float]:
    """Seconds per refresh, one run per snapshot (after one untimed run for imports)."""
    at = AppTest.from_function(_live_section, default_timeout=60)
    times = []
    for i, snap in enumerate([snapshots[0], *snapshots]):
        at.session_state["bench.snapshot"] = snap
        started = time.perf_counter()
        at.run()
        if at.exception:
            raise RuntimeError(f"the live section failed: {at.exception[0].message}")
        if i:
            times.append(time.perf_counter() - started)
    return times


def main() -> None:
    snapshots: list[BatchSnapshot] = pickle.loads(Path(sys.argv[1]).read_bytes())
    times = sorted(time_refreshes(snapshots))
    p95 = statistics.quantiles(times, n=100, method="inclusive")[94] if len(times) > 1 else times[0]
    print(
        json.dumps(
            {
                "refreshes": len(times),
                "p50": round(statistics.median(times) * 1000, 1),
                "p95": round(p95 * 1000, 1),
                "max": round(times[-1] * 1000, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
