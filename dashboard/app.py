"""The DocTune dashboard: `doctune dashboard` runs this file with Streamlit. It only declares the pages."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from backend.endpoint_config import take_handed_key
from dashboard.auth import require_login

VIEWS = Path(__file__).parent / "views"
take_handed_key()  # the key `doctune dashboard` handed over on a pipe, if any (once: later reruns find none)

st.set_page_config(page_title="DocTune", page_icon=":material/build:", layout="wide")
require_login()
# The default page is served at the root only; the hidden twin answers `/overview` (links, bookmarks, the other
# pages' own names) instead of "Page not found". Each needs its own url_path: Streamlit keys pages by it.
page = st.navigation([
    st.Page(VIEWS / "overview.py", title="Overview", icon=":material/home:", url_path="home", default=True),
    st.Page(VIEWS / "overview.py", title="Overview", icon=":material/home:", url_path="overview", visibility="hidden"),
    st.Page(VIEWS / "dataset.py", title="Corpus & dataset", icon=":material/library_books:", url_path="dataset"),
    st.Page(VIEWS / "synthesis.py", title="Synthesis", icon=":material/science:", url_path="synthesis"),
    st.Page(VIEWS / "training.py", title="Training", icon=":material/model_training:", url_path="training"),
    st.Page(VIEWS / "compare.py", title="Compare runs", icon=":material/stacked_line_chart:", url_path="compare"),
    st.Page(VIEWS / "evaluation.py", title="Evaluation", icon=":material/balance:", url_path="evaluation"),
    st.Page(VIEWS / "playground.py", title="Playground", icon=":material/chat:", url_path="playground"),
])
page.run()
