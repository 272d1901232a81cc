"""Who may see the dashboard: the settings of its gate. On 127.0.0.1 (the default) only this machine's users can
reach it; on any other address `doctune dashboard` refuses to start without one of these gates:

- `DOCTUNE_DASHBOARD_PASSWORD`: a shared access password, asked once per browser session;
- `DOCTUNE_DASHBOARD_AUTH=oidc`: Streamlit's OIDC login (`st.login`), configured in `.streamlit/secrets.toml`.

The CLI checks the address before serving; the dashboard's login form (`dashboard/auth.py`) is the gate itself.
"""

from __future__ import annotations

import ipaddress
import os

PASSWORD_VARIABLE = "DOCTUNE_DASHBOARD_PASSWORD"
AUTH_VARIABLE = "DOCTUNE_DASHBOARD_AUTH"


def uses_oidc() -> bool:
    return os.environ.get(AUTH_VARIABLE) == "oidc"


def exposed_without_gate(host: str) -> bool:
    """Whether serving on `host` would let other machines in with no gate configured."""
    return not is_loopback(host) and not os.environ.get(PASSWORD_VARIABLE) and not uses_oidc()


def is_loopback(host: str) -> bool:
    """Whether `host` is this machine only (localhost or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
