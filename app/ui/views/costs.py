"""Costs (admins): what answering has cost, over time and by user, collection and model, and where the
MoE's experts are used."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from app.costs import reports
from app.ui import session
from app.ui.assistant_factory import get_assistant
from app.ui.format import literal_markdown, usd

if TYPE_CHECKING:
    from app.assistant import Assistant

# The charts are Vega-Lite specs written as plain dicts: building the same seven charts through Altair
# (schema validation of every channel) cost about 0.1 s of CPU on every rerun, 0.2 s and more on a busy box.


def metric_chart(x: str, metric: str, kind: str = "line") -> dict[str, Any]:
    """A metric over time (`line`, x temporal) or per user/collection/model (`bar`, largest first)."""
    x_type = "temporal" if kind == "line" else "nominal"
    x_enc: dict[str, Any] = {"field": x, "type": x_type, "title": None}
    if kind != "line":
        x_enc["sort"] = "-y"
    return {
        "mark": {"type": "line", "point": True} if kind == "line" else {"type": "bar", "size": 40},
        "encoding": {
            "x": x_enc,
            "y": {"field": metric, "type": "quantitative", "title": reports.MEASURES[metric]},
            "tooltip": [
                {"field": x, "type": x_type},
                {"field": metric, "type": "quantitative"},
                {"field": "queries", "type": "quantitative"},
            ],
        },
        "height": 220,
    }


def heatmap_chart(data: pd.DataFrame) -> dict[str, Any]:
    """Vega-Lite heatmap of how often each layer's experts are chosen: is the routing balanced?"""
    return {
        "mark": {"type": "rect"},
        "encoding": {
            "x": {"field": "expert", "type": "ordinal", "title": "expert"},
            "y": {"field": "layer", "type": "ordinal", "title": "layer", "sort": "descending"},
            "color": {
                "field": "share",
                "type": "quantitative",
                "title": "share of layer's selections",
                "scale": {"scheme": "viridis"},
            },
            "tooltip": [
                {"field": "layer", "type": "quantitative"},
                {"field": "expert", "type": "quantitative"},
                {"field": "count", "type": "quantitative"},
                {"field": "share", "type": "quantitative", "format": ".1%"},
            ],
        },
        "height": max(200, 12 * int(data["layer"].max() + 1)),
    }


def sparsity_chart() -> dict[str, Any]:
    """Vega-Lite scatter of each query's FLOPs saved against a dense model: what the MoE's sparsity buys."""
    return {
        "mark": {"type": "circle"},
        "encoding": {
            "x": {
                "field": "created_at",
                "type": "temporal",
                "title": None,
                "axis": {"format": "%b %d %H:%M"},
            },
            "y": {
                "field": "sparsity_saving",
                "type": "quantitative",
                "title": "FLOPs saved vs dense",
                "axis": {"format": ".0%"},
                "scale": {"domain": [0, 1]},
            },
            "color": {"field": "model", "type": "nominal"},
            "tooltip": [
                {"field": "id", "type": "quantitative"},
                {"field": "model", "type": "nominal"},
                {"field": "sparsity_saving", "type": "quantitative", "format": ".1%"},
            ],
        },
        "height": 200,
    }


def budgets_section(assistant: Assistant) -> None:
    """Budgets with their use this period (bars), and a form to set or remove one."""
    from app.costs.budgets import METRICS, PERIODS, UNITS, BudgetError

    budgets = assistant.budgets
    usage = budgets.usage_all()
    spent = sum(u.exhausted for u in usage)
    with st.expander(f"Budgets ({len(usage)} set, {spent} spent)", expanded=bool(spent)):
        for u in usage:
            b = u.budget
            st.progress(
                min(1.0, u.fraction),
                text=literal_markdown(
                    f"{b.describe()}: {u.used:.6g} used ({u.fraction:.0%}), resets {u.period_end:%Y-%m-%d %H:%M} UTC"
                ),
            )
        with st.form("budget_set"):
            cols = st.columns(5)
            scope = cols[0].selectbox("For", ["group", "user"], key="budget_scope")
            subject = cols[1].text_input("Group or user name", key="budget_subject")
            metric = cols[2].selectbox(
                "Measure", list(METRICS), format_func=UNITS.__getitem__, key="budget_metric"
            )
            period = cols[3].selectbox("Per", list(PERIODS), key="budget_period")
            limit = cols[4].number_input("Limit", min_value=0.0, value=20.0, key="budget_limit")
            if st.form_submit_button("Set budget"):
                if scope == "user" and assistant.users.get(subject.strip()) is None:
                    st.error(f"No user named {literal_markdown(subject)}.")
                else:
                    try:
                        info = budgets.set(scope, subject.strip(), metric, period, float(limit))
                    except BudgetError as exc:
                        st.error(str(exc))
                    else:
                        st.success(literal_markdown(f"Set: {info.describe()}"))
                        st.rerun()
        if usage:
            labels = {u.budget.id: u.budget.describe() for u in usage}
            chosen = st.selectbox(
                "Remove a budget", list(labels), format_func=labels.__getitem__, key="budget_remove_id"
            )
            if st.button("Remove", key="budget_remove") and chosen is not None:
                budgets.remove(int(chosen))
                st.rerun()


def render() -> None:
    """The Costs page (admins): budgets, then what answering cost over time, per user, collection, model."""
    session.require_admin()
    assistant = get_assistant()
    st.title("Costs")
    limit = st.sidebar.number_input(
        "Queries to analyse (newest)", 100, 1_000_000, 20_000, step=1000, key="costs_limit"
    )
    # Every figure is summed by the database and cached until a new query is logged (see reports.CostView).
    view = reports.CostView(assistant.engine, int(limit))
    budgets_section(assistant)
    if view.empty:
        st.info("No queries yet: costs appear here once people ask questions.")
        return

    summary = view.summary()
    a, b, c, d = st.columns(4)
    a.metric("Queries", f"{summary['queries']:,}")
    b.metric("On-prem cost", usd(summary["cost_usd"]))
    c.metric("Cheapest cloud, same tokens", usd(summary["cloud_cost_usd"]))
    d.metric("FLOPs saved vs dense", f"{summary['saving']:.0%}")
    st.caption(
        f"Energy: {summary['energy_joules']:,.1f} J "
        f"({', '.join(f'{k}: {v}' for k, v in summary['energy_sources'].items())})."
    )

    st.subheader("Over time")
    freq = st.radio("Period", ["day", "hour"], horizontal=True, key="costs_freq")
    timeline = view.timeline(freq)
    cols = st.columns(2)
    for i, metric in enumerate(reports.MEASURES):
        cols[i % 2].vega_lite_chart(timeline, metric_chart("period", metric), width="stretch")

    st.subheader("Breakdown")
    dimension = st.radio(
        "By",
        list(reports.BREAKDOWNS),
        horizontal=True,
        key="costs_by",
        format_func=lambda d: {"user_name": "user"}.get(d, d),
    )
    metric = st.radio(
        "Measure",
        list(reports.MEASURES),
        horizontal=True,
        key="costs_metric",
        format_func=reports.MEASURES.get,
    )
    breakdown = view.breakdown(dimension)
    st.vega_lite_chart(breakdown, metric_chart(dimension, metric, kind="bar"), width="stretch")

    st.subheader("Sparsity saving")
    saving = view.sparsity_points()
    if saving.empty:
        st.caption("No FLOPs recorded yet.")
    else:
        if len(saving) >= reports.SPARSITY_POINTS:
            st.caption(f"The newest {len(saving):,} queries that recorded FLOPs.")
        st.vega_lite_chart(saving, sparsity_chart(), width="stretch")

    st.subheader("Expert utilisation")
    heat = view.heatmap()
    if heat.empty:
        st.caption("No expert selections recorded (a dense model, or no MoE query yet).")
    else:
        newest = min(view.queries, reports.HEATMAP_QUERIES)
        st.caption(
            f"Share of each layer's expert selections, summed over the newest {newest:,} analysed queries."
        )
        st.vega_lite_chart(heat, heatmap_chart(heat), width="stretch")

    st.subheader("Most expensive queries")
    left, right = st.columns(2)
    order = left.radio(
        "Order",
        ["cost", "recent"],
        horizontal=True,
        key="costs_order",
        format_func=lambda o: {"cost": "most expensive", "recent": "newest"}[o],
    )
    page_size = 20
    pages = max(1, -(-view.queries // page_size))
    # No max_value: a page past the end (after fewer queries are chosen) shows the last page, not an error.
    page = min(int(right.number_input("Page", min_value=1, value=1, step=1, key="costs_page")), pages)
    st.dataframe(view.expensive(order, page - 1, page_size), hide_index=True, width="stretch")
    st.caption(f"Page {page:,} of {pages:,} ({page_size} queries a page).")
    # A callable: the CSV (which loads every analysed row) is built when the button is clicked, not per rerun.
    st.download_button(
        "Export all as CSV",
        view.csv,
        file_name="sparq-queries.csv",
        mime="text/csv",
        key="costs_csv",
        on_click="ignore",
    )
