"""Account: who you are, your groups, and changing your password (the first admin must change theirs)."""

from __future__ import annotations

import streamlit as st

from app.ui import session
from app.ui.format import literal_markdown
from app.users import TooManyAttempts, UserError

FLASH_KEY = "account_flash"


def render() -> None:
    """The Account page: who you are, and a password change for accounts sparq manages."""
    user = session.require_user(while_password_change_pending=True)
    st.title("Account")
    flash = st.session_state.pop(FLASH_KEY, None)
    if flash:
        st.success(flash)
    st.write(
        f"Signed in as **{literal_markdown(user.name)}** ({user.role}); "
        f"groups: {literal_markdown(', '.join(user.groups)) or 'none'}."
    )
    if user.source == "oidc":  # no sparq password: the identity provider manages the account
        st.info(
            "Your account and groups come from your company's single sign-on; they are updated at every "
            "sign-in. Change your password there."
        )
        return
    if user.must_change_password:
        st.info("Your password was generated at installation: choose your own to continue.")
    with st.form("password_form", clear_on_submit=True):
        current = st.text_input("Current password", type="password", key="account_current")
        new = st.text_input("New password (at least 8 characters)", type="password", key="account_new")
        again = st.text_input("New password again", type="password", key="account_again")
        if st.form_submit_button("Change password"):
            try:
                right = session.check_password(user, current)
            except TooManyAttempts as exc:
                st.error(str(exc))
                return
            if not right:
                st.error("The current password is wrong.")
            elif new != again:
                st.error("The new passwords differ.")
            elif new == current:
                st.error("Choose a password different from the current one.")
            else:
                try:
                    session.change_password(user, new)
                except UserError as exc:
                    st.error(str(exc))
                else:
                    st.session_state[FLASH_KEY] = (
                        "Password changed. Your other sessions have been signed out."
                    )
                    st.rerun()  # the navigation offers every page again once a generated password is gone
