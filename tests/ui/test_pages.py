"""Each page's logic with Streamlit's AppTest, on a real store, embedder and (small) model."""

from __future__ import annotations

import pytest

from app.costs import ledger, reports
from app.ui.format import cost_line, literal_markdown
from app.ui.views.ingest import NEW_COLLECTION, ingest_uploads
from tests.ui.conftest import page


def _ask(at, question: str):
    at.chat_input[0].set_value(question).run()
    assert not at.exception, at.exception
    return at


def test_chat_streams_a_cited_answer_with_its_cost(ready):
    at = page("chat", "alice").run()
    assert at.title[0].value == "Ask sparq"
    assert at.sidebar.multiselect(key="chat_collections").options == ["hr"]
    _ask(at, "How much are meals reimbursed per day?")

    messages = at.session_state["chat_messages"]
    assert [m["role"] for m in messages] == ["user", "assistant"]
    reply = messages[-1]
    assert reply["status"] in ("ok", "no_answer") and reply["content"].strip()
    assert reply["query_id"] and reply["cost"]["prompt_tokens"] > 0
    labels = [e.label for e in at.expander]
    # The cost line is an expander that opens onto the full record.
    assert cost_line(reply["cost"]) in labels
    assert any(" tokens · " in label and " J " in label and "vs dense" in label for label in labels)
    if reply["status"] == "ok":  # sources: the cited (or else retrieved) passages, with the quoted snippet
        source_labels = [label for label in labels if label.startswith("[")]
        assert source_labels and any("policy" in label for label in source_labels)
        quoted = [m.value for m in at.markdown if m.value.startswith("> ")]
        assert any("40 euros" in q for q in quoted)
    else:
        assert at.info and at.info[0].value.startswith("**Not in the documents.**")

    # The conversation stays on the page after the next rerun.
    at.run()
    assert [m.value for m in at.chat_message[0].markdown] == ["How much are meals reimbursed per day?"]


def test_chat_says_plainly_when_the_user_can_read_nothing(ready):
    at = page("chat", "mallory").run()
    assert at.sidebar.multiselect(key="chat_collections").options == []  # 'hr' is not even named
    assert "no documents you can read" in at.info[0].value
    _ask(at, "How much are meals reimbursed per day?")
    reply = at.session_state["chat_messages"][-1]
    assert reply["status"] == "no_documents" and not reply["citations"]
    assert any(i.value.startswith("**Not in the documents.**") for i in at.info)
    assert not [
        e for e in at.expander if e.label.startswith("[")
    ]  # no sources from documents she cannot read


def test_chat_shows_a_rejected_question_as_a_warning(ready):
    at = page("chat", "alice").run()
    _ask(at, "x" * 5000)
    assert any("characters long" in w.value for w in at.warning)
    assert at.session_state["chat_messages"] == []


# Source downloads' access rule: tests/ui/test_document_access.py.


def test_ingest_page_ingests_a_server_folder(ui_assistant, docs_dir):
    (docs_dir / "broken.pdf").write_bytes(b"%PDF-1.4 not really a pdf")
    ui_assistant.settings.ingest_roots = [docs_dir.parent]  # server folders only inside SPARQ_INGEST_ROOTS
    at = page("ingest", "admin").run()
    assert at.title[0].value == "Ingest documents"
    at.selectbox(key="ingest_collection_choice").set_value(NEW_COLLECTION).run()
    at.text_input(key="ingest_collection_new").input("handbook")
    at.text_input(key="ingest_groups").input("staff, finance")
    at.radio(key="ingest_source").set_value("Server folder").run()
    at.text_input(key="ingest_folder").input(str(docs_dir)).run()
    at.button(key="ingest_folder_go").click().run()
    assert not at.exception, at.exception
    assert "2 new" in at.success[0].value and "1 failed" in at.success[0].value
    assert (
        literal_markdown("broken.pdf") in at.error[0].value
    )  # failures are listed (literally) with their reason
    table = at.dataframe[0].value
    assert (
        set(table["status"]) == {"new", "failed"} and table.loc[table["status"] == "failed", "reason"].iloc[0]
    )
    docs = ui_assistant.documents("handbook")
    assert {d.path.rsplit("/", 1)[-1] for d in docs if d.status == "ready"} == {"policy.md", "it.md"}
    assert all(d.groups == ["finance", "staff"] for d in docs if d.status == "ready")


def test_uploads_are_saved_under_the_data_dir_with_safe_names_and_ingested(ui_assistant):
    class Upload:  # what st.file_uploader hands over: a name chosen by the browser, and the bytes
        def __init__(self, name: str, data: bytes) -> None:
            self.name, self._data = name, data

        def getvalue(self) -> bytes:
            return self._data

    summaries, events = ingest_uploads(
        ui_assistant, [Upload("../../evil.md", b"# Evil\n\nNothing to run here.\n")], "up/../x", ["staff"]
    )
    cid = ui_assistant.store.collection_id("up/../x")
    saved = ui_assistant.settings.data_dir.resolve() / "uploads" / str(cid) / "evil.md"
    assert saved.is_file() and events[0].status == "new" and summaries[0].files_new == 1
    assert [d.path for d in ui_assistant.documents("up/../x")] == [str(saved)]


def test_documents_page_searches_and_deletes(ready):
    at = page("documents", "admin").run()
    assert not at.exception
    assert at.dataframe[0].value["collection"].tolist() == ["hr"]
    assert len(at.dataframe[1].value) == 2
    at.text_input(key="docs_search").input("polic").run()
    assert at.dataframe[1].value["path"].str.endswith("policy.md").tolist() == [True]
    assert at.caption[0].value.startswith("1 of 2 documents") or any(
        c.value == "1 of 2 documents" for c in at.caption
    )

    at.checkbox(key="docs_drop_confirm").check().run()
    at.button(key="docs_drop_go").click().run()
    assert not at.exception
    assert ready.collections() == []


def test_costs_page_charts_real_query_log_rows(ready):
    for q in ("How much are meals reimbursed per day?", "When do passwords expire?"):
        ready.ask(q, user="alice")
    ready.ask("Which class do employees fly?", user="mallory")
    frame, _ = ledger.load_queries(ready.engine)
    assert len(frame) == 3 and frame["cost_usd"].gt(0).all()

    at = page("costs", "admin").run()
    assert not at.exception, at.exception
    assert at.metric[0].value == "3"
    charts = at.get("vega_lite_chart")
    assert len(charts) >= 6  # 4 over time, the breakdown, the sparsity saving
    assert len(at.dataframe[0].value) == 3
    at.radio(key="costs_by").set_value("collection").run()
    assert not at.exception
    by_user = reports.CostView(ready.engine).breakdown("user_name")
    assert {"cost_usd", "tokens"} <= set(by_user.columns)
    assert by_user["user_name"].tolist()[0] in ("alice", "mallory")
    csv = ledger.to_csv(frame).decode()
    assert csv.splitlines()[0].startswith("id,created_at,user_name") and "When do passwords expire?" in csv


def test_costs_page_shows_the_expert_heatmap_from_a_real_moe_query(ready, tiny_moe_llm):
    ready.use_llm(tiny_moe_llm)  # a real qwen2moe through llama.cpp: 2 MoE layers x 8 experts, top-2
    ready.ask("When do passwords expire?", user="alice")
    frame, histograms = ledger.load_queries(ready.engine)
    heat = reports.expert_heatmap(histograms)
    assert heat.shape == (16, 4) and heat["count"].sum() > 0
    assert heat.groupby("layer")["share"].sum().round(6).eq(1).all()
    assert frame["sparsity_saving"].iloc[0] > 0  # top-2 of 8 experts: fewer FLOPs than dense
    at = page("costs", "admin").run()
    assert not at.exception, at.exception
    assert any("expert selections" in c.value for c in at.caption)
    assert len(at.get("vega_lite_chart")) >= 7  # ... and the heatmap


def test_expert_heatmap_sums_histograms_of_the_most_common_shape():
    heat = reports.expert_heatmap(
        [[[5, 0, 1, 2], [0, 4, 4, 0]], None, [[1, 1, 1, 1], [2, 0, 0, 2]], [[9, 9]]]
    )
    assert heat.shape == (8, 4)
    assert heat.loc[(heat.layer == 0) & (heat.expert == 0), "count"].item() == 6
    assert heat.groupby("layer")["share"].sum().round(6).eq(1).all()


def test_csv_export_defuses_spreadsheet_formulas():
    import pandas as pd

    out = ledger.to_csv(pd.DataFrame({"question": ['=HYPERLINK("x")', "fine"], "collections": [[], []]}))
    import csv
    import io

    rows = list(csv.reader(io.StringIO(out.decode())))
    assert rows[1] == ['\'=HYPERLINK("x")'] and rows[2] == ["fine"]


def test_model_page_shows_engine_and_default_build_status(ready):
    at = page("model", "admin").run()
    assert not at.exception, at.exception
    table = at.table[0].value
    assert table.loc["Engine", "Value"] == "llamacpp"
    assert "SmolLM2" in table.loc["Model", "Value"] or "smollm" in table.loc["File", "Value"].lower()
    assert table.loc["Experts per MoE layer", "Value"] == "dense (no experts)"
    assert "not built" in at.warning[0].value  # no default MoE in a fresh data dir


def test_model_page_does_not_load_a_model_by_itself(ui_assistant):
    at = page("model", "admin").run()
    assert not at.exception
    assert "Not loaded yet" in at.info[0].value and ui_assistant.loaded_llm is None


def test_ingest_page_names_a_missing_folder(ui_assistant, tmp_path):
    at = page("ingest", "admin").run()
    at.text_input(key="ingest_collection_new").input("x")
    at.radio(key="ingest_source").set_value("Server folder").run()
    at.text_input(key="ingest_folder").input(str(tmp_path / "nowhere")).run()
    at.button(key="ingest_folder_go").click().run()
    assert not at.exception
    assert "does not exist" in at.error[0].value


def test_documents_page_deletes_selected_rows(ready):
    from app.ui.views.documents import documents_frame

    frame = documents_frame(ready.documents(), "it.md")
    assert frame["path"].str.endswith("it.md").all() and len(frame) == 1
    at = page("documents", "admin").run()
    at.session_state["docs_table"] = {"selection": {"rows": [0], "columns": [], "cells": []}}
    at.run()
    if at.button(key="docs_delete").disabled:  # AppTest cannot always drive a dataframe selection
        pytest.skip("this Streamlit's AppTest does not set dataframe selections")
    at.button(key="docs_delete").click().run()
    assert not at.exception
    assert at.success[0].value == "Deleted 1 documents."
    assert len(ready.documents()) == 1
