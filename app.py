"""crewdash: the Streamlit entry point. Declares the pages and the shared sidebar, nothing else."""

import streamlit as st

from crewdash.errors import CrewdashError
from ui.session import gate, locked, render_sidebar, runtime

st.set_page_config(page_title="crewdash", page_icon=":material/hub:", layout="wide")

navigation = st.navigation(
    [
        st.Page(
            "pages/run.py",
            title="Run",
            icon=":material/rocket_launch:",
            default=True,
            url_path="run",
        ),
        st.Page("pages/history.py", title="History", icon=":material/history:", url_path="history"),
        st.Page(
            "pages/experiments.py",
            title="Experiments",
            icon=":material/science:",
            url_path="experiments",
        ),
        st.Page("pages/bench.py", title="Benchmark", icon=":material/speed:", url_path="bench"),
        st.Page(
            "pages/pitfalls.py", title="Pitfalls", icon=":material/warning:", url_path="pitfalls"
        ),
    ],
    position="hidden" if locked() else "sidebar",
)
gate()
try:
    runtime()
except CrewdashError as exc:  # e.g. DATABASE_URL unreachable: say so, no stack trace
    st.error(f"crewdash cannot start: {exc}", icon=":material/error:")
    st.stop()
render_sidebar()
navigation.run()
