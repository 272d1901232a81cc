"""Playground: one prompt, the base's and a tuned model's answers side by side, streamed from the endpoint that
`doctune serve` runs — the one editors and agents ask — with held-out prompts (the test split) as examples."""

import streamlit as st

from dashboard.common import client, failures_shown

st.title("Playground")
dt = client()
PROMPT = "playground-prompt"


def use_example() -> None:
    if st.session_state.get("playground-example"):
        st.session_state[PROMPT] = st.session_state["playground-example"]


def answer(column, title: str, url: str, model: str, prompt: str, max_tokens: int | None) -> None:
    """Stream the model's answer into its column (`max_tokens` None: show the answer kept from the last ask)."""
    kept = st.session_state.setdefault("playground-answers", {})
    with column:
        st.subheader(title)
        if max_tokens is None:
            st.markdown(kept.get(model, ""))
        else:
            with failures_shown(f"asking {model}"):
                kept[model] = st.write_stream(dt.chat_stream(model, [{"role": "user", "content": prompt}],
                                                             max_tokens=max_tokens, url=url))
        if model in kept and not kept[model]:
            st.caption("(an empty answer: the model ended its turn at once)")


def playground() -> None:
    served = dt.serving()
    if served is None:
        st.info("Nothing is served yet. Start the endpoint with `doctune serve --run RUN --detach` (RUN: a completed "
                "training run, see `doctune runs`); this page then asks it, as any OpenAI client would.")
        return
    st.caption(f"Endpoint {served['url']} (serving run {served['run_id']}); greedy answers, the chat template of "
               "training and evaluation. `doctune serve --stop` ends it.")
    tuned = [m for m in served["models"] if m != "base"]
    if not tuned:
        st.info("The endpoint serves the base model alone: `doctune serve --run RUN` adds a tuned one.")
    model = st.selectbox("Tuned model (training run)", tuned) if tuned else None
    examples = dt.example_prompts(model) if model else []
    if examples:
        st.selectbox("Held-out examples (the test split: files the model never trained on)", [""] + examples,
                     key="playground-example", on_change=use_example)
    prompt = st.text_area("Prompt", key=PROMPT, height=120)
    max_tokens = st.slider("Max new tokens", 16, 1024, 256, step=16)
    # never disabled: a text area's value reaches the script only when it loses focus, which the click itself does
    asked = st.button("Ask", type="primary")
    if asked and not prompt.strip():
        st.warning("Write a prompt first, or pick an example.")
        asked = False
    if asked or st.session_state.get("playground-answers"):  # a rerun (a slider moved) keeps the last answers
        left, right = st.columns(2)
        answer(left, "Base", served["url"], "base", prompt, max_tokens if asked else None)
        if model:
            answer(right, f"Tuned ({model})", served["url"], model, prompt, max_tokens if asked else None)


playground()
