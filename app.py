"""crewdash: the Streamlit entry point. Declares the pages and the shared sidebar, nothing else."""

import streamlit as st

from crewdash.base.errors import CrewdashError
from ui.session import gate, locked, render_sidebar, runtime
from ui.text import plain

st.set_page_config(page_title="crewdash", page_icon=":material/hub:", layout="wide")

RUN_PAGE = st.Page("pages/run.py", title="Run", icon=":material/rocket_launch:", url_path="run")


def _home() -> None:
    """The app root opens the Run page at `/run`. Streamlit serves a default page only at `/`
    (its `url_path` is reserved but answers "Page not found"), so the default is this hidden
    page and Run keeps its own URL; the query (`?batch=...`) goes along."""
    st.switch_page(RUN_PAGE, query_params=st.query_params.to_dict())


navigation = st.navigation(
    [
        st.Page(_home, title="crewdash", url_path="home", default=True, visibility="hidden"),
        RUN_PAGE,
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
        st.Page("pages/account.py", title="Account", icon=":material/person:", url_path="account"),
    ],
    position="hidden" if locked() else "sidebar",
)
gate()
try:
    runtime()
except CrewdashError as exc:  # e.g. DATABASE_URL unreachable: say so, no stack trace
    st.error(plain(f"crewdash cannot start: {exc}"), icon=":material/error:")
    st.stop()
render_sidebar()
navigation.run()
