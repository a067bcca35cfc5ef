"""Short, human figures for the cost line under each answer (kept apart so the wording is tested)."""

from __future__ import annotations

from typing import Any


def params(n: float) -> str:
    """A parameter count as people say it (1.2B, 350M), for model summaries."""
    if n >= 1e9:
        return f"{n / 1e9:.1f}B"
    if n >= 1e6:
        return f"{n / 1e6:.0f}M"
    return f"{n:,.0f}"


def usd(x: float) -> str:
    """Dollars with enough digits that a fraction of a cent still shows."""
    if x == 0:
        return "$0"
    if x < 0.01:
        return f"${x:.6f}"
    return f"${x:,.4f}"


def cost_line(cost: dict[str, Any]) -> str:
    """tokens · seconds · active params · energy (measured|modelled) · cost · saving vs dense and vs cloud."""
    parts = [
        f"{cost.get('prompt_tokens', 0)}+{cost.get('completion_tokens', 0)} tokens",
        f"{cost.get('wall_seconds', 0.0):.1f} s",
    ]
    total_params = cost.get("total_params") or 0
    if total_params:
        parts.append(
            f"{params(cost.get('active_params_per_token') or 0)} of {params(total_params)} params active"
        )
    parts.append(f"{cost.get('energy_joules', 0.0):.1f} J {cost.get('energy_source', 'modelled')}")
    total = float(cost.get("total_usd") or 0.0)
    parts.append(usd(total))
    saving = float(cost.get("sparsity_saving") or 0.0)
    parts.append(f"{saving:.0%} FLOPs saved vs dense")
    cloud = cost.get("cloud_usd") or {}
    if cloud:
        name, price = min(cloud.items(), key=lambda kv: kv[1])
        if price > 0:
            ratio = total / price
            parts.append(
                f"{1 - ratio:.0%} cheaper than {name}" if ratio <= 1 else f"{ratio:.1f}× the cost of {name}"
            )
    return " · ".join(parts)


# Markdown's punctuation, plus what Streamlit and GFM add: `:` (`:red[..]`, `:material/..:` and the `http:`
# of bare-URL autolinks), `@` (e-mail autolinks), `$` (LaTeX), `&` (HTML entities), `=` and `"`.
_MD_SPECIAL = "\\`*_{}[]<>()#+-.!|~:@$&=\"'"


def inert_markdown(text: str) -> str:
    """Model output as Markdown that cannot load anything: `![..](url)` would make every reader's browser
    fetch that URL (a way for a poisoned document to leak the conversation), so `!` is escaped. Piecewise
    safe: escaping each streamed piece gives the same result as escaping the whole text."""
    return text.replace("!", "\\!")


def literal_markdown(text: str) -> str:
    """Document text shown exactly as written (a quoted snippet, a title in a label or caption), with no
    Markdown or HTML effect: no image is fetched, no link made."""
    return "".join("\\" + ch if ch in _MD_SPECIAL else ch for ch in text)
