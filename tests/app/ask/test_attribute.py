"""Attribution on the ask: uncited sentences cited to the passage that bears them out (real embedder)."""

from __future__ import annotations

import numpy as np

from app.ask.attribute import Attributor, query_embedding
from model.prompting import CitationCheck
from tests.app.ask.parts import provider

EVIDENCE = [
    "policy.md, Travel policy\nEmployees book economy class for flights under six hours.",
    "policy.md, Expenses\nMeals are reimbursed up to 40 euros per day.",
]


def test_an_uncited_sentence_is_cited_to_its_passage(embedder):
    encoder = provider(embedder)
    attributor = Attributor(query_embedding(encoder, threads=1))
    checked = CitationCheck(
        "Economy class for short flights [1]. Meals are reimbursed up to 40 euros per day.", [1], [7], [3]
    )
    found = attributor.run(checked, EVIDENCE, question="What are the travel rules?")
    assert found.attributed == [2]
    assert found.checked.cited == [1, 2]
    assert found.checked.text.endswith("40 euros per day [2].")
    assert (found.checked.removed, found.checked.unsupported) == ([7], [3])  # carried as they were


def test_a_sentence_no_passage_supports_stays_uncited(embedder):
    found = Attributor(query_embedding(lambda: embedder, threads=1)).run(
        CitationCheck("The canteen opens at noon.", [], []), EVIDENCE, question="When does the canteen open?"
    )
    assert found.attributed == [] and found.checked.text == "The canteen opens at noon."


def test_the_embedding_is_the_query_encoders_loaded_when_first_needed(embedder):
    encoder = provider(embedder)
    embed = query_embedding(encoder, threads=1)
    assert encoder.calls == 0
    vectors = embed(["meals", "flights"])
    assert vectors.shape == (2, embedder.dim)
    np.testing.assert_allclose(vectors[0], embedder.encode_query("meals", threads=1), rtol=1e-5, atol=1e-6)
