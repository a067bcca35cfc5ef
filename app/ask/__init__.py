"""The main path: a question in, a grounded and cited answer out, with what it cost logged in SQL.

One module per step, each built with what it needs and run by `pipeline.AskPipeline`:
`followup` (rewrite a follow-up) -> `retrieve` -> `prompt` (pack) -> `generate` -> `citations` (check, and
`attribute` uncited sentences) -> `metering` (cost) -> `log` (the query_log row, written whatever happens).
`app.container` wires them for an Assistant.

The answer's types and errors are the ask's public face (the API, UI and CLI use them) and are imported
from here; the steps are imported from their modules."""

from app.ask.answer import Answer, Citation
from app.ask.labels import location_of, source_label
from app.ask.question import MAX_QUESTION_CHARS, AskError

__all__ = ["MAX_QUESTION_CHARS", "Answer", "AskError", "Citation", "location_of", "source_label"]
