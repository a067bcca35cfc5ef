"""Account: who you are, your groups, and changing your password (the first admin must change theirs)."""

from __future__ import annotations

import streamlit as st

from app.ui import session
from app.users import UserError


def render() -> None:
    user = session.require_user()
    assistant = session.get_assistant()
    st.title("Account")
    st.write(f"Signed in as **{user.name}** ({user.role}); groups: {', '.join(user.groups) or 'none'}.")
    with st.form("password_form", clear_on_submit=True):
        current = st.text_input("Current password", type="password")
        new = st.text_input("New password (at least 8 characters)", type="password")
        again = st.text_input("New password again", type="password")
        if st.form_submit_button("Change password"):
            if assistant.users.authenticate(user.name, current) is None:
                st.error("The current password is wrong.")
            elif new != again:
                st.error("The new passwords differ.")
            else:
                try:
                    assistant.users.update(user.name, password=new)
                except UserError as exc:
                    st.error(str(exc))
                else:
                    st.success("Password changed.")
