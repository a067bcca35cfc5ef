"""Text from documents reaches the page literally: a title or heading holding Markdown image or link
syntax (a tracking pixel that would fire in every reader's browser) is shown as text in the source
labels and captions, and readers see collection-relative paths, never where the server keeps files.
Run on the real chat page (AppTest) with real ingestion, retrieval and the small model."""

from __future__ import annotations

import re

import pytest

from app.ask import location_of
from app.ui.format import literal_markdown
from tests.ui.conftest import page

PIXEL = "![pixel](http://127.0.0.1:9/p.png) [click](http://127.0.0.1:9/)"
QUESTION = "How much are meals reimbursed per day on trips?"
# An image or a link that Markdown would render: `![..](..)` / `[..](..)` whose brackets are not escaped.
IMAGE = re.compile(r"(?<!\\)!(?<!\\)\[[^\]]*(?<!\\)\]\(")
LINK = re.compile(r"(?<!\\)\[[^\]]*(?<!\\)\]\(")
BARE_URL = re.compile(r"https?://")


@pytest.fixture
def poisoned(ui_assistant, small_llm, docs_dir):
    """The usual documents plus two whose title and heading carry image and link markup, in a subfolder."""
    sub = docs_dir / "travel"
    sub.mkdir()
    (sub / "meals.md").write_text(
        f"# {PIXEL}\n\nMeals on trips are reimbursed up to 40 euros per day.\n\n"
        "## Per ![diem](http://127.0.0.1:9/h.png)\n\nMeals abroad: 50 euros per day with receipts.\n"
    )
    (sub / "trips.html").write_text(
        "<html><head><title>![t](http://127.0.0.1:9/t.png) Trip meals</title></head>"
        "<body><p>Trip meals are reimbursed per day as the travel policy says.</p></body></html>"
    )
    ui_assistant.use_llm(small_llm)
    ui_assistant.ingest(docs_dir, collection="hr", groups=["staff"])
    return ui_assistant


def _shown_text(at) -> list[str]:
    """Every string the page hands to the browser as Markdown: labels, captions, messages, answers."""
    out = [e.label for e in at.expander]
    for kind in (at.markdown, at.caption, at.info, at.warning, at.error, at.success):
        out.extend(e.value for e in kind)
    return out


def _document_text(at) -> list[str]:
    """What the sources show from documents: expander labels, captions and quoted snippets (answers are
    model output, which keeps its links and only loses images: `inert_markdown`)."""
    return (
        [e.label for e in at.expander]
        + [c.value for c in at.caption]
        + [m.value for m in at.markdown if m.value.startswith("> ")]
    )


def _poisoned_messages(assistant) -> list[dict]:
    """An answer message over what retrieval really finds for alice, showing its sources both ways the
    chat page can: as citations, and (none cited) as the retrieved passages."""
    hits = assistant.search(QUESTION, user="alice", k=6)
    assert any(h.title and "pixel" in h.title for h in hits), [h.title for h in hits]
    passages = [
        {
            "ref": i,
            "chunk_id": h.chunk_id,
            "document_id": h.document_id,
            "path": h.path,
            "title": h.title,
            "location": location_of(h),
            "text": h.text,
            "score": float(h.score_fused),
        }
        for i, h in enumerate(hits, start=1)
    ]
    citations = [
        {
            "ref": p["ref"],
            "document_id": p["document_id"],
            "title": p["title"],
            "path": p["path"],
            "location": p["location"],
            "snippet": p["text"][:200],
            "score": p["score"],
        }
        for p in passages
    ]
    cited = {
        "role": "assistant",
        "content": "Meals are reimbursed up to 40 euros per day [1].",
        "status": "ok",
        "citations": citations,
        "passages": passages,
    }
    fallback = dict(cited, citations=[])
    return [{"role": "user", "content": QUESTION}, cited, {"role": "user", "content": QUESTION}, fallback]


def test_document_titles_and_paths_are_shown_literally_and_relative(poisoned, docs_dir, tmp_path):
    at = page("chat", "alice")
    at.session_state["chat_messages"] = _poisoned_messages(poisoned)
    at.run()
    assert not at.exception, at.exception
    at.chat_input[0].set_value(QUESTION).run()  # and one asked on the page itself
    assert not at.exception, at.exception

    labels = [e.label for e in at.expander if e.label.startswith("[")]
    assert any(literal_markdown(PIXEL) in label for label in labels), labels  # the title, as text
    assert any(literal_markdown("![diem](http://127.0.0.1:9/h.png)") in label for label in labels)
    captions = [c.value for c in at.caption]
    assert any(c.endswith(" · " + literal_markdown("travel/meals.md")) for c in captions), captions

    for text in _document_text(at):
        assert not IMAGE.search(text), text
        assert not LINK.search(text), text
        assert not BARE_URL.search(text), text  # no autolink either: `http\://` stays text
    for text in _shown_text(at):
        assert not IMAGE.search(text), text
        assert str(tmp_path) not in text and str(docs_dir.resolve()) not in text, text


def test_readers_see_collection_relative_paths_not_the_servers(poisoned, docs_dir, tmp_path):
    at = page("chat", "alice")
    at.session_state["chat_messages"] = _poisoned_messages(poisoned)
    at.run()
    assert not at.exception, at.exception
    captions = [c.value for c in at.caption if c.value.startswith("score ")]
    assert captions and not any(str(docs_dir.resolve()) in c or str(tmp_path) in c for c in captions), (
        captions
    )
    assert any(c.endswith(" · " + literal_markdown("travel/meals.md")) for c in captions), captions
    assert any(c.endswith(" · " + literal_markdown("policy.md")) for c in captions), captions


def test_an_admin_sees_the_same_literal_labels(poisoned, tmp_path):
    at = page("chat", "admin")
    at.session_state["chat_messages"] = _poisoned_messages(poisoned)[:2]
    at.run()
    assert not at.exception, at.exception
    for text in _document_text(at):
        assert not IMAGE.search(text) and not LINK.search(text), text
    for text in _shown_text(at):
        assert not IMAGE.search(text) and str(tmp_path) not in text, text


def test_model_output_still_cannot_load_images(poisoned):
    at = page("chat", "alice")
    message = _poisoned_messages(poisoned)[1]
    message["content"] = f"See {PIXEL} now."
    at.session_state["chat_messages"] = [{"role": "user", "content": QUESTION}, message]
    at.run()
    answer_markdown = [m.value for m in at.chat_message[1].markdown if "See" in m.value]
    assert answer_markdown and not IMAGE.search(answer_markdown[0])
