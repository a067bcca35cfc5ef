"""The HTTP API's request and response bodies: the OpenAI Chat Completions shape plus a `sparq` object.

Declared as pydantic models so that `/openapi.json` documents every field, and a client generated from
it (or the official `openai` client, which ignores unknown fields) reads citations and cost.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


def _utc(value: datetime) -> datetime:
    """SQLite hands back timestamps without their zone; sparq writes UTC, so say so (RFC 3339 needs it)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]

# Ids are database integers: larger ones cannot exist, and refusing them here keeps them out of SQL.
MAX_ID = 2**63 - 1


class ErrorBody(BaseModel):
    """An error in OpenAI's shape (`message`, `type`, `code`): OpenAI clients report it as their own."""

    message: str
    type: str
    code: str | None = None


class ErrorResponse(BaseModel):
    """Every error: the same shape as OpenAI's, so clients report `error.message`."""

    error: ErrorBody


class ContentPart(BaseModel):
    """One part of a multi-part message; only text parts are read, other kinds are kept but ignored."""

    model_config = ConfigDict(extra="allow")
    type: str = "text"
    text: str | None = None


class ChatMessage(BaseModel):
    """A chat message as OpenAI clients send it; unknown fields pass, so newer clients are not refused."""

    model_config = ConfigDict(extra="allow")
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text; list content keeps its text parts only (images are not read)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if p.type == "text" and p.text)


class ChatRequest(BaseModel):
    """OpenAI's request; sampling options are accepted and ignored (answers are greedy)."""

    model_config = ConfigDict(extra="allow")
    model: str = "sparq"
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    stream: bool = False
    collections: list[str] | None = Field(default=None, description="sparq: restrict retrieval to these.")
    conversation_id: int | None = Field(
        default=None, description="sparq: append this turn to a saved conversation."
    )
    save: bool = Field(
        default=False, description="sparq: save this turn (a new conversation unless conversation_id)."
    )


class Citation(BaseModel):
    """A passage the answer cites, with where it is in the document, so a reader can check the claim."""

    ref: int
    document_id: int
    collection: str | None
    path: str = Field(description="The document's path inside its collection (never a server path).")
    title: str | None
    location: str = Field(description="page / slide / sheet / heading of the passage")
    page: int | None = None
    slide: int | None = None
    sheet: str | None = None
    quote: str = Field(description="The cited passage's text (shortened).")
    score: float
    attributed: bool = Field(
        default=False,
        description="Cited by sparq (the passage holds the words of a sentence the model left "
        "uncited), not by the model itself.",
    )


class SparqExtra(BaseModel):
    """What sparq adds to every chat response: sources, outcome, the query log id and its measured cost."""

    status: Literal["ok", "no_answer", "no_documents", "over_budget"]
    query_id: int | None
    citations: list[Citation]
    cost: dict[str, Any]
    timings_ms: dict[str, float]
    model: str | None
    engine: str | None
    rewritten_question: str | None = None
    conversation_id: int | None = None


class Usage(BaseModel):
    """Tokens the answer used, in OpenAI's shape (what the model read and wrote)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    """The answer itself, as the `message` of an OpenAI choice."""

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    """The single choice of a response: sparq answers once per request, OpenAI clients expect a list."""

    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop", "length"] = "stop"


class ChatResponse(BaseModel):
    """A Chat Completions response: OpenAI's fields, which its clients read, plus sparq's sources and cost."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    sparq: SparqExtra


class ModelCard(BaseModel):
    """A model the API can answer with, as OpenAI's model list names it."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "sparq"


class ModelList(BaseModel):
    """The models `/v1/models` lists, so OpenAI clients can pick one."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class SearchFiltersBody(BaseModel):
    """Narrows a search to collections, file types, a folder or a modification window; empty: all."""

    collections: list[str] = Field(default_factory=list)
    mimes: list[str] = Field(default_factory=list)
    extensions: list[str] = Field(default_factory=list, description="e.g. ['.pdf', '.docx']")
    path_prefix: str | None = None
    modified_after: datetime | None = None
    modified_before: datetime | None = None


class SearchRequest(BaseModel):
    """A search without an answer: the passages found for `query`, for clients that do their own reading."""

    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(default=8, ge=1, le=100)
    mode: Literal["hybrid", "dense", "keyword"] = "hybrid"
    filters: SearchFiltersBody | None = None


class SearchHit(BaseModel):
    """One retrieved passage with its document and place in it; only documents the caller may read appear."""

    chunk_id: int
    document_id: int
    collection: str
    path: str = Field(description="The document's path inside its collection.")
    title: str | None
    text: str
    page: int | None
    slide: int | None
    sheet: str | None
    heading_path: str | None
    ocr_confidence: float | None = Field(
        default=None,
        description="Read by OCR from a scan: the engine's mean word confidence (0-100); null for text.",
    )
    mime: str
    score_dense: float | None
    score_keyword: float | None
    score_fused: float
    rank: int
    rank_dense: int | None
    rank_keyword: int | None


class SearchResponse(BaseModel):
    """The passages a search found, best first, as an OpenAI-style list."""

    object: Literal["list"] = "list"
    data: list[SearchHit]


class DocumentRecord(BaseModel):
    """A document as the API lists it: where it is, its ingest status and who may read it."""

    id: int
    collection: str
    path: str
    title: str | None
    mime: str
    size: int
    status: str
    error: str | None
    chunks: int
    groups: list[str]
    duplicate_of: int | None
    updated_at: UtcDatetime


class CollectionRecord(BaseModel):
    """A collection with its size, so a client sees what is ingested before it asks."""

    name: str
    documents: int
    chunks: int
    created_at: UtcDatetime


class Health(BaseModel):
    """What `/healthz` reports: the index and model states, `degraded` when the database cannot be reached."""

    status: Literal["ok", "degraded"]
    database: bool
    index: dict[str, Any]
    model: dict[str, Any]


class FeedbackRequest(BaseModel):
    """A rating of one of the caller's own answers (by its query id), with an optional comment."""

    query_id: int = Field(ge=1, le=MAX_ID)
    rating: Literal["up", "down"]
    comment: str | None = Field(default=None, max_length=2000)


class FeedbackResponse(BaseModel):
    """The rating as recorded (rating the same answer again changes this one)."""

    id: int
    query_id: int
    rating: Literal["up", "down"]


class ConversationSummary(BaseModel):
    """A saved conversation as listed: its title, dates and length, without the messages."""

    id: int
    title: str
    created_at: UtcDatetime
    updated_at: UtcDatetime
    messages: int


class ConversationDetail(BaseModel):
    """A saved conversation with every message, its citations and cost, to resume it."""

    id: int
    title: str
    created_at: UtcDatetime
    updated_at: UtcDatetime
    messages: list[dict[str, Any]]


class CostGroup(BaseModel):
    """The measured cost of the queries that share one key (a user, collection, day or model)."""

    key: str
    queries: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cloud_cost_usd: float
    energy_joules: float
    flops: float
    dense_flops: float
    mean_latency_ms: float
    sparsity_saving: float


class BudgetStatus(BaseModel):
    """A budget that applies to the caller, with its use this period and when that resets."""

    scope: Literal["user", "group"]
    subject: str
    metric: Literal["usd", "tokens", "joules"]
    period: Literal["day", "month"]
    limit: float
    used: float
    resets_at: UtcDatetime


class CostsResponse(BaseModel):
    """What `/v1/costs` returns: the costs grouped as asked, and the caller's budgets."""

    by: Literal["user", "collection", "day", "model"]
    since: UtcDatetime | None
    groups: list[CostGroup]
    budgets: list[BudgetStatus] = Field(description="The caller's budgets and their use this period.")


class FileFailure(BaseModel):
    """A file an ingest could not read or skipped, with the reason."""

    path: str
    error: str


class IngestReport(BaseModel):
    """What an upload or re-ingest did: the same counts and per-file errors as `sparq ingest`."""

    collection: str
    files_new: int
    files_updated: int
    files_unchanged: int
    files_failed: int
    files_skipped: int
    files_removed: int
    chunks_added: int
    chunks_removed: int
    seconds: float
    failures: list[FileFailure]
    skipped: list[FileFailure]
    run_id: int | None


class CollectionCreate(BaseModel):
    """A new, empty collection: a name to upload documents into."""

    name: str = Field(min_length=1, max_length=200)
