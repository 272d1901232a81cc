"""The dashboard's login gate: a password form or Streamlit's OIDC login, whichever the environment configures
(the settings and when a gate is required: `backend/auth_config.py`)."""

from __future__ import annotations

import hmac
import os

import streamlit as st

from backend.auth_config import PASSWORD_VARIABLE, uses_oidc


def require_login() -> None:
    """Stop the script run here until the visitor has passed the configured gate (if any)."""
    if uses_oidc():
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
