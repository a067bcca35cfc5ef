"""The one Assistant every page of the web app uses.

A single factory, so tests can point the UI at a test configuration (SPARQ_* environment) or hand it a ready
Assistant with `use_assistant`, and no page ever builds its own.
"""

from __future__ import annotations

import streamlit as st

from app.assistant import Assistant
from app.config import Settings
from app.ui.bootstrap import ensure_admin

_override: Assistant | None = None


def use_assistant(assistant: Assistant | None) -> None:
    """Serve the UI from this Assistant (tests; embedding sparq in another process); None restores the default."""
    global _override
    _override = assistant


@st.cache_resource(show_spinner="Starting sparq…")
def _shared_assistant() -> Assistant:
    """One Assistant per server process: it is thread-safe and owns the model, index and database pool.
    The first admin is made here too, so a server started without `sparq ui` can still be signed into."""
    assistant = Assistant(Settings())
    ensure_admin(assistant.users, assistant.settings.data_dir)
    return assistant


def get_assistant() -> Assistant:
    """The Assistant pages use: a test's override, else the one shared by every session of this process."""
    return _override if _override is not None else _shared_assistant()
