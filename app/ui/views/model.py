"""Model (admins): which engine and model answer, their size and sparsity, and the default model's build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from app.ui import session
from app.ui.assistant_factory import get_assistant
from app.ui.format import params
from model.base import ModelError


def engine_facts(info: Any) -> dict[str, Any]:
    """The loaded engine's facts, in the words the page shows."""
    total = info.total_params or 0
    return {
        "Engine": info.backend,
        "Model": info.name,
        "File": info.path or "",
        "Architecture": info.architecture,
        "Context window": f"{info.context_window:,} tokens",
        "Total parameters": params(total),
        "Active parameters per token": params(info.active_params_per_token)
        + (f" ({info.active_params_per_token / total:.0%})" if total else ""),
        "Experts per MoE layer": info.n_experts if info.is_moe else "dense (no experts)",
        "Experts used per token (top-k)": info.n_experts_used if info.is_moe else "–",
        "Shared experts": info.n_shared_experts if info.is_moe else "–",
        "MoE layers / layers": f"{info.n_moe_layers} / {info.n_layers}",
    }


def default_model_status(data_dir: Path) -> tuple[str, dict[str, Any] | None]:
    """('built', summary) or ('not built', None), from the default model's manifest; never builds it."""
    from model.moe.info import describe_model

    try:
        return "built", describe_model(data_dir)
    except ModelError as exc:  # ModelNotFound: the manifest is missing
        return str(exc), None


@st.fragment(run_every=2)
def model_progress() -> None:
    """The answer model's load (on a fresh install: the default MoE's build), refreshed every 2 s without
    rerunning the page; the whole page reruns once the model is ready or has failed."""
    load = get_assistant().llm_status
    if load.state != "loading":
        st.rerun(scope="app")
    fraction = min(max(load.fraction or 0.0, 0.0), 1.0)
    st.progress(fraction, text=f"Preparing the answer model ({fraction:.0%}): {load.message}")
    st.caption(
        "This happens once. Questions are answered when it is ready; every other page works meanwhile."
    )


def render() -> None:
    """The Model page (admins): the answer model and its load state, and whether the default MoE is built."""
    session.require_admin()
    assistant = get_assistant()
    s = assistant.settings
    st.title("Model")

    st.subheader("Answer model")
    loaded = assistant.loaded_llm  # never triggers a load (or a default-model build)
    if loaded is None:
        st.info(
            f"Not loaded yet (it loads on the first question). Configured: backend `{s.llm_backend}`, "
            f"model `{s.llm_model or 'embedded default MoE'}`."
        )
        load = assistant.llm_status
        if load.state == "loading":
            model_progress()
        else:
            if load.state == "failed":
                st.error(f"Loading the model failed: {load.message}")
            if st.button("Load it now", key="model_load"):  # in the background: this page shows its progress
                assistant.load_llm_in_background(retry=True)
                st.rerun()
    if loaded is not None:
        facts = engine_facts(loaded.info)
        st.table(
            pd.DataFrame({"Fact": list(facts), "Value": [str(v) for v in facts.values()]}).set_index("Fact")
        )

    st.subheader("Default model build")
    status, summary = default_model_status(s.data_dir)
    if summary is None:
        st.warning(f"Not built: {status}.")
        st.caption("It is also built on first use when no model is configured (SPARQ_LLM_MODEL unset).")
    else:
        st.success(f"The embedded default MoE is built: {summary.get('name')}")
        st.json(summary, expanded=False)
