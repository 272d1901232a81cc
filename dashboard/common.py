"""What every page shares: the client (one per server process), the project picker, charts, error display.

Pages call the client API (`actors/client.py`) only: no SQL and no model code here. Every figure a page draws
is aggregated in the store first, so a page receives kilobytes whatever the size of the database.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import pandas as pd
import streamlit as st

from actors.client import ACTIVE as LIVE  # noqa: F401 (queued or running; the pages import it from here)
from actors.client import DocTune


@st.cache_resource(show_spinner="Connecting to the DocTune runtime…")
def _client(home: str | None, address: str | None):
    return DocTune(home, ray_address=address)


def client():
    """The DocTune client of this server process (home and Ray address from the environment).

    A client whose store actor has gone (the cluster was restarted, the actor killed) is replaced, so the
    dashboard recovers without a restart."""
    dt = _client(os.environ.get("DOCTUNE_HOME"), os.environ.get("RAY_ADDRESS"))
    if not dt.connected():
        _client.clear()
        dt = _client(os.environ.get("DOCTUNE_HOME"), os.environ.get("RAY_ADDRESS"))
    return dt


@contextmanager
def failures_shown(what: str):
    """Turn an exception into a readable error on the page (and keep the rest of the page)."""
    from streamlit.errors import FragmentHandledException

    try:
        yield
    except FragmentHandledException:
        raise  # a self-refreshing panel failed and already said why (Streamlit handles the rest)
    except Exception as exc:  # a page shows what went wrong, never a traceback
        st.error(f"{what} failed: {type(exc).__name__}: {exc}")


def project_picker(key: str = "project") -> str | None:
    """The sidebar's project selector, shared by every page; None (with a hint) when there is no project."""
    projects = [p["name"] for p in client().projects()]
    if not projects:
        st.info("No project yet. Ingest a repository first: `doctune ingest PATH --project NAME` "
                "(or `doctune demo` for the bundled sample).")
        return None
    # a link from another page (`?project=P&run=R`, the Overview's rows) names the project to open
    linked = st.query_params.get("project")
    if linked in projects and st.session_state.get("linked-project") != linked:
        st.session_state["linked-project"] = st.session_state["project"] = linked
        st.session_state.pop(f"{key}-select", None)
    chosen = st.session_state.get("project")
    index = projects.index(chosen) if chosen in projects else 0
    project = st.sidebar.selectbox("Project", projects, index=index, key=f"{key}-select")
    st.session_state["project"] = project
    return project


def run_picker(runs: list[dict], state_key: str, key: str | None = None) -> dict:
    """A selectbox of runs (newest first) showing each one's status; the run last started from this page
    (its id in `st.session_state[state_key]`) is preselected, unless a link names another (`?run=ID`; a page
    that starts a run drops the link's). With a widget `key`, the choice survives a change of status in the labels
    (a refreshing panel), until a link names another run. Returns the chosen run."""
    ids = [r["run_id"] for r in runs]
    status = {r["run_id"]: r["status"] for r in runs}
    linked = st.query_params.get("run")
    if key is not None:
        if linked in ids and st.session_state.get(f"{key}-link") != linked:
            st.session_state.pop(key, None)  # a link not seen before wins over the choice the widget kept
        st.session_state[f"{key}-link"] = linked
    chosen = linked if linked in ids else st.session_state.get(state_key)
    run_id = st.selectbox("Run", ids, index=ids.index(chosen) if chosen in ids else 0, key=key,
                          format_func=lambda i: f"{i} ({status_label(status[i])})")
    return runs[ids.index(run_id)]


def status_label(status: str) -> str:
    """A run's status as shown; `interrupted` says what to do about it."""
    return "interrupted (rerun to resume)" if status == "interrupted" else status


RUN_PAGES = {"synth": "synthesis", "train": "training", "eval": "evaluation", "merge": "training",
             "ingest": "dataset", "curate": "dataset"}
"""The page that shows a run of each kind (links from the Overview open it there, with the run chosen)."""


def run_link(run: dict) -> str:
    """A relative link to the page of `run` with its project and itself chosen."""
    return f"/{RUN_PAGES.get(run['kind'], 'home')}?project={run['project'] or ''}&run={run['run_id']}"


def report_table(report: dict, prefix: str = "") -> pd.DataFrame:
    """A nested report (a curation's counts and rates) as two columns, `item` and `value`; nested keys joined
    with ` › `, rates and shares as percentages."""
    rows = []
    for k, v in report.items():
        name = f"{prefix}{k}".replace("_", " ")
        if isinstance(v, dict):
            rows += report_table(v, f"{name} › ").to_dict("records")
        elif isinstance(v, float) and ("rate" in k or "share" in k):
            rows.append({"item": name, "value": f"{v:.1%}"})
        else:
            rows.append({"item": name, "value": ", ".join(map(str, v)) if isinstance(v, list) else str(v)})
    return pd.DataFrame(rows, columns=["item", "value"])


def fmt_ts(ts) -> str:
    return ts.strftime("%Y-%m-%d %H:%M:%S") if ts is not None else ""


def bar(data: dict, x: str, y: str, title: str, horizontal: bool = False):
    import plotly.express as px

    keys, values = [str(k) for k in data], list(data.values())
    fig = (px.bar(x=values, y=keys, orientation="h", labels={"x": y, "y": x}, title=title) if horizontal
           else px.bar(x=keys, y=values, labels={"x": x, "y": y}, title=title))
    fig.update_layout(height=320, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def curves(table, title: str, x_label: str = "step", facet: bool = True, order: list[str] | None = None):
    """A Plotly figure of downsampled series (run_id, name, x, value): one panel per metric (in `order`), one
    line per run; a series with few points gets markers."""
    import plotly.express as px

    df = table.to_pandas() if hasattr(table, "to_pandas") else table
    if df.empty:
        return None
    n = df["name"].nunique()
    names = [m for m in (order or []) if m in set(df["name"])] + sorted(set(df["name"]) - set(order or []))
    # D3's ten colours: the Streamlit theme's palette starts with two blues, and two runs looked like one
    fig = px.line(df, x="x", y="value", color="run_id", facet_col="name" if facet and n > 1 else None,
                  color_discrete_sequence=px.colors.qualitative.D3,
                  facet_col_wrap=2, labels={"x": x_label, "value": ""}, title=title,
                  category_orders={"name": names}, markers=df.groupby(["run_id", "name"]).size().min() < 30)
    fig.update_yaxes(matches=None, showticklabels=True)
    fig.update_layout(height=300 * ((n + 1) // 2 if facet and n > 1 else 1), margin=dict(l=10, r=10, t=50, b=10),
                      legend=dict(orientation="h", y=-0.15))
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
    return fig


def version_picker(dt, project: str, *, key: str, where=None, label: str = "Dataset version") -> str | None:
    """Pick a dataset version of `project` (the current one preselected), shown with its lineage; warns when the
    pick leaves out a review, so nobody trains on or exports a version without knowing. None: no version yet.

    `where` is the container to draw in (a column; default the page)."""
    where = where or st
    versions = dt.datasets(project)
    if not versions:
        return None
    names = [v["version"] for v in versions]
    by_name = {v["version"]: v for v in versions}
    current = next((v["version"] for v in versions if v["current"]), names[-1])
    version = where.selectbox(label, names, index=names.index(current), key=key,
                              format_func=lambda n: f"{n} · {describe_version(by_name[n])}"
                              + (" (current)" if n == current else ""))
    lineage = dt.dataset_lineage(project, version)
    where.caption("Lineage: " + " ← ".join(f"{v['version']} {v['operation'] or 'curation'}"
                                           + (f" ({v['note']})" if v["note"] else "")
                                           for v in lineage["lineage"]))
    for review in lineage["left_out"]:
        where.warning(f"{version} leaves out review {review['version']}"
                      + (f" ({review['note']})" if review["note"] else "")
                      + f": its decisions on {review['samples']} sample(s) are not in {version}. "
                      f"The current version is {current}.")
    return version


def describe_version(v: dict) -> str:
    """What made a version, in a few words: `retry of v2`, `synthesis`."""
    what = v["operation"] or "curation"
    return f"{what} of {v['parent']}" if v["parent"] else what
