"""Corpus & dataset: what was ingested, what was skipped and why, what the dataset holds with its lineage, how far
the repository on disk has drifted from it (and from each adapter's training data), and a reviewer's sample browser
whose edits and rejections make a new dataset version (the old one never changes); a multi-turn sample is edited
turn by turn. The review goes through the same client call as `doctune review`."""

import pandas as pd
import streamlit as st

from dashboard.common import bar, client, failures_shown, project_picker, report_table, version_picker

PAGE_SIZE = 25

st.title("Corpus & dataset")
dt = client()


@st.cache_data(ttl=30, show_spinner=False)
def _profile(home: str, project: str, version: str):
    """Cached per home too: every home has its own `v1`, and one process may show several (the tests do)."""
    return dt.dataset_profile(project, version)


@st.cache_data(ttl=30, show_spinner=False)
def _drift(home: str, project: str, version: str) -> tuple[dict, list[dict]]:
    """The version against the repository on disk, and every adapter's dataset likewise (each reads the disk)."""
    return dt.dataset_drift(project, version), dt.adapter_drift(project)


def corpus(project: str) -> None:
    stats = dt.stats(project)
    c = st.columns(5)
    c[0].metric("Files read", stats["files"])
    c[1].metric("Skipped", sum(stats["skipped"].values()))
    c[2].metric("Chunks", stats["chunks"])
    c[3].metric("Tokens", f"{stats['tokens']:,}")
    c[4].metric("Dead letters", stats["dead_letters"])
    if not stats["files"] and not stats["skipped"]:
        st.info("This project has no files: ingest its repository again.")
        return
    left, right = st.columns(2)
    if stats["files_by_kind"]:
        left.plotly_chart(bar(stats["files_by_kind"], "kind", "files", "Files by kind"), key="kinds")
    hist = stats["tokens_per_chunk"]["histogram"]
    if stats["chunks"]:
        right.plotly_chart(bar(hist, "tokens per chunk", "chunks", "Chunk sizes (tokens)"), key="tokens")
    if stats["skipped"]:
        with st.expander(f"Skipped files ({sum(stats['skipped'].values())}), with reasons"):
            st.dataframe(pd.DataFrame(dt.skipped_files(project)), hide_index=True)
    identifiers(project)


def identifiers(project: str) -> None:
    """The names the repository defines or documents: what api_recall and api_hallucination look answers up in."""
    index = dt.identifiers(project, limit=0)
    total = sum(index["counts"].values())
    if not total:
        return
    with st.expander(f"Repository identifiers ({total:,}): the names evaluation checks answers against"):
        st.caption("Built from the chunks after every ingest: modules, classes, functions, methods, parameters, "
                   "constants (with their qualified names), and the docs' code spans — config keys, CLI flags and "
                   "commands, error codes. An answer naming `pkg.module.Thing` that is not here invented it.")
        left, right = st.columns([1, 2])
        left.dataframe(pd.DataFrame(list(index["counts"].items()), columns=["kind", "names"]), hide_index=True)
        kinds = [""] + list(index["counts"])
        c = right.columns(2)
        kind = c[0].selectbox("Kind", kinds, format_func=lambda k: k or "all", key="ident-kind")
        search = c[1].text_input("Search names", key="ident-search")
        found = dt.identifiers(project, kind or None, search or None, limit=200)["rows"]
        right.dataframe(pd.DataFrame(found, columns=["name", "kind", "path", "qualified"]), hide_index=True)


def dataset(project: str) -> None:
    versions = dt.datasets(project)
    if not versions:
        st.info("No dataset version yet: run a synthesis (Synthesis page) — it curates its samples into one.")
        return
    saved = st.session_state.pop("review-saved", None)
    if saved:  # a review was just saved: show its new version (whose editor starts clean)
        st.session_state["version"], message = saved
        st.session_state["note"] = ""
        st.success(message)
    version = version_picker(dt, project, key="version")
    if not next(v for v in versions if v["version"] == version)["current"] and st.button(
            f"Make {version} the current version", help="training and export use the current version by default, "
                                                        "and a new synthesis adds its samples onto it"):
        with failures_shown("Making it current"):
            dt.set_current_dataset(project, version)
            st.rerun()
    profile = _profile(str(dt.home), project, version)
    cur = profile["curation"]
    cov = profile["coverage"]
    c = st.columns(5)
    c[0].metric("Samples", f"{profile['samples']:,}")
    c[1].metric("Test samples", f"{profile['splits'].get('test', 0):,}", help="held out for evaluation")
    c[2].metric("Duplicate rate", f"{cur['duplicate_rate']:.1%}" if "duplicate_rate" in cur else "n/a",
                help="exact and near duplicates removed during curation, over the samples it received")
    c[3].metric("Files covered", f"{cov['files_with_samples']} / {cov['files_with_chunks']}",
                help="source files with at least one sample, of those with chunks")
    c[4].metric("Judged", f"{profile['judged']:,}")
    left, right = st.columns(2)
    left.plotly_chart(bar(profile["tasks"], "task", "samples", "Task mix"), key="tasks")
    if profile["judge_histogram"]:
        right.plotly_chart(bar(profile["judge_histogram"], "judge score", "samples", "Judge scores (1–10)"),
                           key="judge")
    else:
        right.info("No judge scores in this version (`doctune curate --judge` adds them).")
    left, right = st.columns(2)
    left.plotly_chart(bar({r["path"]: r["samples"] for r in cov["top_files"]}, "file", "samples",
                          "Coverage: samples per source file (top 25)", horizontal=True), key="coverage")
    right.plotly_chart(bar(profile["splits"], "split", "samples", "Split sizes"), key="splits")
    if cur:
        with st.expander("Curation report"):
            st.dataframe(report_table(cur), hide_index=True)
    drift(project, version)
    browser(project, version, profile)


def drift(project: str, version: str) -> None:
    """What changed in the repository since the version was made, and how stale each adapter's training data is."""
    st.subheader("Drift against the repository on disk")
    changes, adapters = _drift(str(dt.home), project, version)
    if changes["against"] is None:
        st.info("The repository's folder is not on this machine: ingest it again to compare.")
        return
    stale = sum(changes["stale"].values())
    c = st.columns(4)
    c[0].metric("Files added", len(changes["added"]))
    c[1].metric("Files changed", len(changes["changed"]))
    c[2].metric("Files deleted", len(changes["deleted"]), help=f"{len(changes['renamed'])} of them renamed")
    c[3].metric("Stale samples", f"{stale:,}", help="samples of this version from files changed or deleted since")
    if changes["added"] or changes["changed"] or changes["deleted"]:
        st.caption(f"`doctune refresh --project {project} --dry-run` shows what a refresh would send and cost; "
                   "without --dry-run it makes the next version, paying only for what changed.")
        with st.expander("Files changed since this version"):
            st.dataframe(pd.DataFrame([{"file": p, "change": kind} for kind in ("added", "changed", "deleted")
                                       for p in changes[kind]]), hide_index=True)
    else:
        st.caption("The repository on disk is what this version was made from.")
    if adapters:
        st.dataframe(pd.DataFrame([{"adapter (training run)": a["run_id"], "dataset": a["dataset"],
                                    "trained on": a["trained_on"], "stale": a["stale"]} for a in adapters]),
                     hide_index=True)


def browser(project: str, version: str, profile: dict) -> None:
    st.subheader("Sample browser")
    f = st.columns([3, 1, 1])
    search = f[0].text_input("Search instruction, input, output or path", key="search")
    task = f[1].selectbox("Task", [""] + list(profile["tasks"]), key="task", format_func=lambda t: t or "all")
    split = f[2].selectbox("Split", [""] + list(profile["splits"]), key="split", format_func=lambda t: t or "all")
    page = st.session_state.get("page", 1)
    found = dt.browse_samples(project, version, search=search, task=task or None, split=split or None,
                              limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    pages = max(1, -(-found["total"] // PAGE_SIZE))
    if page > pages:  # the filters changed under a later page
        page = st.session_state["page"] = 1
        found = dt.browse_samples(project, version, search=search, task=task or None, split=split or None,
                                  limit=PAGE_SIZE)
    st.number_input(f"Page (of {pages:,}; {found['total']:,} matches)", 1, pages, key="page")
    rows = found["rows"]
    if not rows:
        st.info("No sample matches these filters.")
        return
    original = pd.DataFrame([{"reject": False, "sample_id": r["sample_id"], "split": r["split"], "task": r["task"],
                              "turns": len(r["messages"] or []) or None, "instruction": r["instruction"],
                              "input": r["input"], "output": r["output"], "path": r["path"],
                              "judge": r["judge_score"]} for r in rows])
    edited = st.data_editor(original, hide_index=True, key=f"editor-{version}-{page}-{search}-{task}-{split}",
                            disabled=["sample_id", "split", "task", "turns", "path", "judge"],
                            column_config={"reject": st.column_config.CheckboxColumn("reject", help="drop it"),
                                           "turns": st.column_config.NumberColumn(
                                               "turns", help="a multi-turn sample: edit its turns below")})
    decisions: dict[str, dict] = {}
    for (_, before), (_, after) in zip(original.iterrows(), edited.iterrows()):
        changed = {k: after[k] for k in ("instruction", "input", "output") if after[k] != before[k]}
        decisions[before["sample_id"]] = {"reject": True} if after["reject"] else changed
    multi = [r for r in rows if r["messages"]]
    if multi:
        st.caption(f"{len(multi)} multi-turn sample(s) on this page: training and export use their turns, so "
                   "edit them turn by turn below (the grid's instruction is the first user turn, its output the "
                   "last assistant turn).")
    for r in multi:
        conversation(r, version, decisions)
    lines = [{"sample_id": sid, **fields} for sid, fields in decisions.items() if fields]
    edited_n = sum("reject" not in line for line in lines)
    note = st.text_input("Review note", key="note", placeholder="why these changes (stored on the new version)")
    if st.button(f"Save as a new version ({edited_n} edited, {len(lines) - edited_n} rejected)",
                 disabled=not lines, type="primary"):
        with failures_shown("Saving the review"):
            new = dt.review(project, lines, version=version, note=note or None)["version"]
            # move to the new version; staying on this one would offer the same edits as yet another version
            st.session_state["review-saved"] = (new, f"Saved as {new}; {version} is unchanged. {new} is now the "
                                                     "current version: training and export use it by default.")
            st.rerun()


def conversation(row: dict, version: str, decisions: dict[str, dict]) -> None:
    """A multi-turn sample, turn by turn with its roles: what training and export use. Edits of the turns and a
    rejection go into `decisions` (its grid row's instruction/output edits are kept in step by the review)."""
    sid = row["sample_id"]
    first = row["messages"][0]["content"]
    with st.expander(f"Conversation {sid} · {len(row['messages'])} turns · {first[:80]}"):
        turns = [{"role": m["role"], "content": st.text_area(f"Turn {i} · {m['role']}", m["content"],
                                                             key=f"turn-{version}-{sid}-{i}")}
                 for i, m in enumerate(row["messages"], start=1)]
        rejected = st.checkbox("Reject this sample", key=f"reject-{version}-{sid}")
    if rejected or decisions[sid].get("reject"):
        decisions[sid] = {"reject": True}
    elif turns != [{"role": m["role"], "content": m["content"]} for m in row["messages"]]:
        decisions[sid]["messages"] = turns


project = project_picker()
if project:
    with failures_shown("Loading the corpus"):
        st.header("Corpus")
        corpus(project)
    with failures_shown("Loading the dataset"):
        st.header("Dataset")
        dataset(project)
