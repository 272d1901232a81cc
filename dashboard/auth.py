"""Who may see the dashboard. On 127.0.0.1 (the default) only this machine's users can reach it; on any other
address `doctune dashboard` refuses to start without one of these gates:

- `DOCTUNE_DASHBOARD_PASSWORD`: a shared access password, asked once per browser session;
- `DOCTUNE_DASHBOARD_AUTH=oidc`: Streamlit's OIDC login (`st.login`), configured in `.streamlit/secrets.toml`.
"""

from __future__ import annotations

import hmac
import os

import streamlit as st

PASSWORD_VARIABLE = "DOCTUNE_DASHBOARD_PASSWORD"
AUTH_VARIABLE = "DOCTUNE_DASHBOARD_AUTH"


def require_login() -> None:
    """Stop the script run here until the visitor has passed the configured gate (if any)."""
    if os.environ.get(AUTH_VARIABLE) == "oidc":
        if not st.user.is_logged_in:
            st.title("DocTune")
            st.button("Log in", on_click=st.login)
            st.stop()
        return
    password = os.environ.get(PASSWORD_VARIABLE)
    if not password or st.session_state.get("authenticated"):
        return
    st.title("DocTune")
    with st.form("login"):
        given = st.text_input("Access password", type="password")
        if st.form_submit_button("Enter"):
            if hmac.compare_digest(given.encode(), password.encode()):
                st.session_state["authenticated"] = True
                st.rerun()
            st.error("Wrong password.")
    st.stop()
