"""Saved conversations and feedback on the chat page (AppTest of the real page, real store and model):
a reload keeps the conversation, another user never sees it, thumbs-down is stored with the query id,
and a spent budget is refused with a clear message instead of an answer."""

from __future__ import annotations

from app.conversations import Conversations
from app.feedback import FeedbackLog
from tests.ui.conftest import page


def test_a_reload_reopens_the_conversation_and_only_its_owner_sees_it(ready):
    at = page("chat", "alice").run()
    at.chat_input[0].set_value("How much are meals reimbursed per day?").run()
    assert not at.exception, at.exception
    saved = Conversations(ready.engine).list("alice")
    assert len(saved) == 1 and saved[0].messages == 2
    assert saved[0].title == "How much are meals reimbursed per day?"

    reloaded = page("chat", "alice").run()  # a new browser session: empty state, same user
    assert not reloaded.exception, reloaded.exception
    messages = reloaded.session_state["chat_messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    assert messages[0]["content"] == "How much are meals reimbursed per day?"
    assert messages[1]["query_id"] and messages[1]["cost"]["prompt_tokens"] > 0
    assert any(b.label.endswith("How much are meals reimbursed per day?") for b in reloaded.sidebar.button)

    other = page("chat", "mallory").run()
    assert other.session_state["chat_messages"] == []
    assert Conversations(ready.engine).list("mallory") == []


def test_thumbs_down_is_stored_with_the_query_id(ready):
    at = page("chat", "alice").run()
    at.chat_input[0].set_value("What is the VPN server?").run()
    assert not at.exception, at.exception
    query_id = at.session_state["chat_messages"][-1]["query_id"]
    at.feedback[0].set_value(0).run()  # 0 = thumbs down
    assert not at.exception, at.exception
    assert FeedbackLog(ready.engine).of(query_id, "alice") == "down"
    at.feedback[0].set_value(1).run()
    assert FeedbackLog(ready.engine).of(query_id, "alice") == "up"


def test_feedback_page_lists_ratings_for_admins_only(ready):
    at = page("chat", "alice").run()
    at.chat_input[0].set_value("What is the VPN server?").run()
    query_id = at.session_state["chat_messages"][-1]["query_id"]
    FeedbackLog(ready.engine).rate(query_id, "alice", "down", "![x](http://127.0.0.1:9/p.png) wrong")
    admin = page("feedback", "admin").run()
    assert not admin.exception, admin.exception
    assert admin.title[0].value == "Feedback"
    assert any("What is the VPN server?" in e.label for e in admin.expander)
    assert not any("![x](" in m.value for m in admin.markdown)  # the comment is shown as text, not markup
    employee = page("feedback", "alice").run()
    assert employee.error and "administrators" in employee.error[0].value


def test_a_spent_budget_is_refused_on_the_page_with_a_clear_message(ready):
    ready.budgets.set("user", "alice", "tokens", "day", 1)
    at = page("chat", "alice").run()
    at.chat_input[0].set_value("What is the VPN server?").run()
    at.chat_input[0].set_value("And the password expiry?").run()
    assert not at.exception, at.exception
    assert any("budget" in w.value and "per day is spent" in w.value for w in at.warning)


def test_costs_page_sets_budgets_and_shows_their_use(ready):
    at = page("chat", "alice").run()
    at.chat_input[0].set_value("What is the VPN server?").run()
    admin = page("costs", "admin").run()
    assert not admin.exception, admin.exception
    admin.text_input(key="budget_subject").set_value("staff")
    admin.selectbox(key="budget_metric").set_value("tokens")
    admin.number_input(key="budget_limit").set_value(5.0)
    form_button = next(b for b in admin.button if b.label == "Set budget")
    form_button.click().run()
    assert not admin.exception, admin.exception
    assert [(b.scope, b.subject, b.metric, b.limit) for b in ready.budgets.list()] == [
        ("group", "staff", "tokens", 5.0)
    ]
    usage = ready.budgets.usage_all()[0]
    assert usage.exhausted  # alice (staff) already used more than 5 tokens today
    assert any("1 spent" in e.label for e in admin.expander)
