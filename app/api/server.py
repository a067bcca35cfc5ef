"""The HTTP API (FastAPI): OpenAI-compatible chat with citations and cost, search, documents, health.

It is one more front door to the same `Assistant` the CLI and the web app use: asking, retrieval and
access control are the Assistant's, so a key sees exactly what its user would see in the UI. The API
adds only what HTTP needs: key authentication, a per-key rate limit and a bounded wait for the model.
"""

import functools
import json
import logging
import queue
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select, text
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api import schemas
from app.api_keys import ApiKeys
from app.ask import Answer, AskError
from app.assistant import Assistant, SparqError
from app.conversations import ConversationError, Conversations
from app.costs.budgets import OverBudget
from app.feedback import FeedbackError, FeedbackLog
from app.paths import relative_paths
from app.users import UserInfo
from model.base import ModelError
from retrieval.filters import SearchFilters
from retrieval.schema import Chunk, Collection, Document
from retrieval.store import StoreError

log = logging.getLogger(__name__)
_END = object()  # marks the end of a streamed answer
RowId = Annotated[int, PathParam(ge=1, le=schemas.MAX_ID)]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.ErrorResponse, "description": why}
    for code, why in {
        400: "The request cannot be answered as given.",
        401: "Missing, wrong, expired or revoked API key.",
        403: "The key's user may not call this endpoint.",
        404: "No such document, collection, conversation or query of the caller's.",
        413: "An uploaded file is over SPARQ_MAX_FILE_MB.",
        422: "The body does not match the schema.",
        429: "Rate limit exceeded; see Retry-After.",
        503: "The model is busy or unavailable; see Retry-After.",
    }.items()
}


class ApiError(Exception):
    """An error answered as OpenAI-style JSON with a status and optional headers."""

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


class RateLimiter:
    """At most `per_minute` requests per key in any sliding 60 s; bounded memory (least recent keys go)."""

    def __init__(
        self, per_minute: int, *, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000
    ) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self.max_keys = max_keys
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Raises a 429 ApiError when `key` is over its limit; otherwise counts this request."""
        if self.per_minute <= 0:
            return
        now = self.clock()
        with self._lock:
            hits = self._hits.pop(key, None) or deque()
            while hits and now - hits[0] >= 60.0:
                hits.popleft()
            self._hits[key] = hits
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
            if len(hits) >= self.per_minute:
                retry = max(1, int(60.0 - (now - hits[0])) + 1)
                raise ApiError(
                    429,
                    f"rate limit of {self.per_minute} requests per minute exceeded",
                    "rate_limit_exceeded",
                    {"Retry-After": str(retry)},
                )
            hits.append(now)


class ModelGate:
    """A bounded queue in front of the model: callers wait up to `wait_s` for a slot, then get a 503."""

    def __init__(self, slots: int, wait_s: float) -> None:
        self._slots = threading.BoundedSemaphore(max(1, slots))
        self.wait_s = wait_s

    def acquire(self) -> None:
        """Wait up to `wait_s` for a model slot; then a 503 with Retry-After, never an unbounded queue."""
        if not self._slots.acquire(timeout=self.wait_s):
            raise ApiError(
                503,
                f"the model is busy; no slot freed within {self.wait_s:g} s",
                "model_busy",
                {"Retry-After": str(max(1, int(self.wait_s)))},
            )

    def release(self) -> None:
        """Free the slot taken by `acquire`, so the next waiting caller gets the model."""
        self._slots.release()


def _as_api_error(exc: BaseException) -> BaseException:
    """The HTTP answer to an error of the ask path; anything unexpected is re-raised as it is."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, OverBudget):
        return ApiError(429, str(exc), "over_budget", {"Retry-After": str(exc.retry_after_s)})
    if isinstance(exc, AskError):
        return ApiError(400, str(exc), "invalid_request_error")
    if isinstance(exc, ModelError):
        return ApiError(503, f"the model failed: {exc}", "model_error", {"Retry-After": "5"})
    return exc


def _error_json(status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = schemas.ErrorResponse(error=schemas.ErrorBody(message=message, type=kind, code=str(status)))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class CollectionPaths:
    """Collection names and collection-relative paths for documents, so no server path leaves the API."""

    def __init__(self, assistant: Assistant) -> None:
        self.assistant = assistant

    def lookup(self, document_ids: set[int]) -> dict[int, tuple[str, str]]:
        """document id -> (collection name, path inside the collection)."""
        if not document_ids:
            return {}
        store = self.assistant.store
        with store.sessions() as session:
            rows = session.execute(
                select(Document.id, Document.path, Document.collection_id, Collection.name)
                .join(Collection, Collection.id == Document.collection_id)
                .where(Document.id.in_(sorted(document_ids)))
            ).all()
            shown = relative_paths(
                session, self.assistant.settings.data_dir, [(r.id, r.path, r.collection_id) for r in rows]
            )
            return {r.id: (r.name, shown[r.id]) for r in rows}

    def locations(self, chunk_ids: set[int]) -> dict[int, tuple[int | None, int | None, str | None]]:
        """chunk id -> (page, slide, sheet) of the cited passage."""
        if not chunk_ids:
            return {}
        with self.assistant.store.sessions() as session:
            rows = session.execute(
                select(Chunk.id, Chunk.page, Chunk.slide, Chunk.sheet).where(Chunk.id.in_(sorted(chunk_ids)))
            ).all()
        return {r.id: (r.page, r.slide, r.sheet) for r in rows}


def create_app(
    assistant: Assistant,
    *,
    keys: ApiKeys | None = None,
    rate_limiter: RateLimiter | None = None,
    gate: ModelGate | None = None,
) -> FastAPI:
    """The API over one Assistant; collaborators default from its settings (tests pass their own)."""
    settings = assistant.settings
    keys = keys or ApiKeys(assistant.engine, assistant.users)
    limiter = rate_limiter or RateLimiter(settings.api_rate_limit_per_minute)
    gate = gate or ModelGate(settings.api_model_slots, settings.api_queue_timeout_s)
    paths = CollectionPaths(assistant)
    bearer = HTTPBearer(auto_error=False, description="An API key from `sparq keys create`.")
    app = FastAPI(title="sparq", version="1", description=__doc__, responses=ERRORS)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error_json(exc.status, exc.message, exc.kind, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error_json(exc.status_code, str(exc.detail), "http_error", dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error_json(422, f"{where}: {first.get('msg', 'invalid request')}", "invalid_request_error")

    def caller(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> UserInfo:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise ApiError(401, "an API key is required: Authorization: Bearer <key>", "authentication_error")
        user = keys.verify(credentials.credentials)
        if user is None:
            raise ApiError(401, "the API key is wrong, expired or revoked", "authentication_error")
        limiter.check(f"key:{credentials.credentials[:24]}")
        return user

    def admin(user: Annotated[UserInfo, Depends(caller)]) -> UserInfo:
        if not user.is_admin:
            raise ApiError(403, "this endpoint is for administrators", "permission_error")
        return user

    def model_name() -> str:
        llm = assistant.loaded_llm
        return llm.info.name if llm is not None else "sparq"

    @app.get("/healthz", response_model=schemas.Health, tags=["health"])
    def healthz() -> schemas.Health:
        """Liveness and readiness, without a key: database reachable, index loaded, model loaded."""
        database = True
        try:
            with assistant.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # reported in the body; the endpoint itself must answer
            log.warning("health check: database unreachable: %s", type(exc).__name__)
            database = False
        index: dict[str, Any] = {"loaded": False}
        if database:
            store = assistant.store
            index = {"loaded": True, "kind": store.vectors.kind, "chunks": store.vectors.ntotal}
        llm = assistant.loaded_llm
        model = {
            "loaded": llm is not None,
            "name": llm.info.name if llm else None,
            "backend": llm.info.backend if llm else settings.llm_backend,
        }
        return schemas.Health(
            status="ok" if database else "degraded", database=database, index=index, model=model
        )

    @app.get("/v1/models", response_model=schemas.ModelList, tags=["chat"])
    def models(_: Annotated[UserInfo, Depends(caller)]) -> schemas.ModelList:
        """The one answer model (any `model` value in a chat request is served by it)."""
        return schemas.ModelList(data=[schemas.ModelCard(id=model_name(), created=int(time.time()))])

    def _question(body: schemas.ChatRequest) -> tuple[str, list[dict[str, str]]]:
        turns = [m for m in body.messages if m.role in ("user", "assistant")]
        if not turns or turns[-1].role != "user":
            raise ApiError(400, "the last message must be the user's question", "invalid_request_error")
        question = turns[-1].text()
        history = [{"role": m.role, "content": m.text()} for m in turns[:-1] if m.text()]
        return question, history

    def _conversation_for(body: schemas.ChatRequest, user: UserInfo, question: str) -> int | None:
        """The conversation this turn is saved to: checked (or created) before the model is called."""
        store = Conversations(assistant.engine)
        if body.conversation_id is not None:
            try:
                store.get(user.name, body.conversation_id)
            except ConversationError as exc:
                raise ApiError(404, str(exc), "not_found") from exc
            return body.conversation_id
        return store.start(user.name, question) if body.save else None

    def _save_turn(
        conversation_id: int | None, user: UserInfo, question: str, answer: Answer, extra: schemas.SparqExtra
    ) -> None:
        if conversation_id is None:
            return
        store = Conversations(assistant.engine)
        store.append(user.name, conversation_id, "user", question)
        store.append(
            user.name,
            conversation_id,
            "assistant",
            answer.text,
            {
                "status": answer.status,
                "query_id": answer.query_id,
                "citations": [c.model_dump() for c in extra.citations],
                "cost": extra.cost,
                "timings_ms": answer.timings_ms,
                "model": answer.model,
            },
        )

    def _extra(answer: Answer) -> schemas.SparqExtra:
        places = paths.lookup({c.document_id for c in answer.citations})
        spots = paths.locations({c.chunk_id for c in answer.citations})
        citations = []
        for c in answer.citations:
            collection, rel = places.get(c.document_id, (None, c.path.rsplit("/", 1)[-1]))
            page, slide, sheet = spots.get(c.chunk_id, (None, None, None))
            citations.append(
                schemas.Citation(
                    ref=c.ref,
                    document_id=c.document_id,
                    collection=collection,
                    path=rel,
                    title=c.title,
                    location=c.location,
                    page=page,
                    slide=slide,
                    sheet=sheet,
                    quote=c.snippet,
                    score=c.score,
                    attributed=c.attributed,
                )
            )
        llm = assistant.loaded_llm
        return schemas.SparqExtra(
            status=answer.status,
            query_id=answer.query_id,
            citations=citations,
            cost=answer.cost.to_dict(),
            timings_ms=answer.timings_ms,
            model=answer.model,
            engine=llm.info.backend if llm else None,
            rewritten_question=answer.rewritten_question,
        )

    def _usage(answer: Answer) -> schemas.Usage:
        return schemas.Usage(
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            total_tokens=answer.prompt_tokens + answer.completion_tokens,
        )

    def _ask(
        question: str, history: list[dict[str, str]], user: UserInfo, body: schemas.ChatRequest, stream: bool
    ) -> Any:
        try:
            return assistant.ask(
                question,
                user=user.principal(),
                history=history or None,
                collections=body.collections,
                stream=stream,
            )
        except (AskError, ModelError, OverBudget) as exc:
            raise _as_api_error(exc) from exc

    @app.post(
        "/v1/chat/completions",
        response_model=schemas.ChatResponse,
        tags=["chat"],
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "JSON, or server-sent events when stream is true",
            }
        },
    )
    def chat(body: schemas.ChatRequest, user: Annotated[UserInfo, Depends(caller)]) -> Any:
        """OpenAI Chat Completions: the last user message is the question, earlier turns its history."""
        question, history = _question(body)
        created = int(time.time())
        conversation_id = _conversation_for(body, user, question)
        gate.acquire()
        if not body.stream:
            try:
                answer = _ask(question, history, user, body, stream=False)
            finally:
                gate.release()
            extra = _extra(answer)
            _save_turn(conversation_id, user, question, answer, extra)
            extra.conversation_id = conversation_id
            return schemas.ChatResponse(
                id=f"chatcmpl-{answer.query_id}",
                created=created,
                model=model_name(),
                choices=[schemas.Choice(message=schemas.AssistantMessage(content=answer.text))],
                usage=_usage(answer),
                sparq=extra,
            )
        events: queue.Queue[Any] = queue.Queue()  # unbounded: a gone client never blocks the ask
        threading.Thread(
            target=_produce,
            args=(question, history, user, body, events),
            daemon=True,
            name="sparq-api-stream",
        ).start()
        first = events.get()
        if isinstance(first, BaseException):  # refused before any text: an ordinary error response
            raise _as_api_error(first) from first
        saver = functools.partial(_save_turn, conversation_id, user, question)
        return StreamingResponse(
            _sse(first, events, created, saver, conversation_id), media_type="text/event-stream"
        )

    def _produce(
        question: str,
        history: list[dict[str, str]],
        user: UserInfo,
        body: schemas.ChatRequest,
        events: queue.Queue[Any],
    ) -> None:
        """Run the whole ask on one thread (its CPU time is the query's own), handing pieces to the
        response; an error is handed over as the last item. The model slot is freed here, when the
        ask has really ended, even if the client went away."""
        try:
            for item in _ask(question, history, user, body, stream=True):
                events.put(item)
        except BaseException as exc:  # handed to the response, which reports it to the client
            events.put(exc)
        finally:
            gate.release()
            events.put(_END)

    def _sse(
        first: Any,
        events: queue.Queue[Any],
        created: int,
        save: Callable[[Answer, schemas.SparqExtra], None],
        conversation_id: int | None,
    ) -> Iterator[str]:
        chunk_id = "chatcmpl-stream"

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            body = {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model_name(),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        item = first
        while item is not _END:
            if isinstance(item, BaseException):
                message = (
                    f"the model failed: {item}"
                    if isinstance(item, ModelError | ApiError)
                    else (f"the answer failed: {type(item).__name__}")
                )
                if not isinstance(item, ModelError | ApiError):
                    log.error("streamed answer failed", exc_info=item)
                error = schemas.ErrorResponse(
                    error=schemas.ErrorBody(message=message, type="model_error", code="503")
                )
                yield f"data: {error.model_dump_json()}\n\n"
                return
            if isinstance(item, Answer):
                chunk_id = f"chatcmpl-{item.query_id}"
                extra = _extra(item)
                save(item, extra)
                extra.conversation_id = conversation_id
                yield chunk({}, "stop", usage=_usage(item).model_dump(), sparq=extra.model_dump(mode="json"))
            elif item:
                yield chunk({"content": item})
            item = events.get()
        yield "data: [DONE]\n\n"

    @app.post("/v1/search", response_model=schemas.SearchResponse, tags=["search"])
    def search(
        body: schemas.SearchRequest, user: Annotated[UserInfo, Depends(caller)]
    ) -> schemas.SearchResponse:
        """The passages the caller may read, best first, with every ranking's score."""
        f = body.filters
        try:
            filters = (
                None
                if f is None
                else SearchFilters(
                    collections=tuple(f.collections),
                    mimes=tuple(f.mimes),
                    extensions=tuple(f.extensions),
                    path_prefix=f.path_prefix,
                    modified_after=f.modified_after,
                    modified_before=f.modified_before,
                )
            )
            hits = assistant.search(
                body.query, user=user.principal(), k=body.k, filters=filters, mode=body.mode
            )
        except (SparqError, ValueError) as exc:
            raise ApiError(400, str(exc), "invalid_request_error") from exc
        places = paths.lookup({h.document_id for h in hits})
        data = []
        for h in hits:
            row = h.to_dict()
            row["path"] = places.get(h.document_id, (h.collection, h.path.rsplit("/", 1)[-1]))[1]
            data.append(schemas.SearchHit(**row))
        return schemas.SearchResponse(data=data)

    @app.get("/v1/documents", response_model=list[schemas.DocumentRecord], tags=["admin"])
    def documents(
        _: Annotated[UserInfo, Depends(admin)], collection: str | None = None
    ) -> list[schemas.DocumentRecord]:
        """Every stored document with its status and error (admins only)."""
        return [schemas.DocumentRecord(**vars(d)) for d in assistant.documents(collection)]

    @app.post(
        "/v1/documents",
        response_model=list[schemas.IngestReport],
        tags=["admin"],
        responses={413: {"model": schemas.ErrorResponse, "description": "A file over SPARQ_MAX_FILE_MB."}},
    )
    def upload(
        _: Annotated[UserInfo, Depends(admin)],
        files: Annotated[list[UploadFile], File(description="One or more documents.")],
        collection: Annotated[str, Form(min_length=1, max_length=200)],
        groups: Annotated[str, Form(description="Comma-separated groups that may read them.")] = "",
    ) -> list[schemas.IngestReport]:
        """Upload and ingest files (admins only): the same loaders, limits and error reports as the CLI."""
        limit = settings.max_file_mb * 1024 * 1024
        group_list = [g.strip() for g in groups.split(",") if g.strip()]
        reports = []
        for item in files:
            data = item.file.read(limit + 1)
            if len(data) > limit:
                raise ApiError(
                    413, f"{item.filename}: larger than the {settings.max_file_mb} MB limit", "too_large"
                )
            try:
                summary = assistant.ingest_upload(
                    item.filename or "upload", data, collection=collection, groups=group_list or None
                )
            except (SparqError, ValueError) as exc:
                raise ApiError(400, str(exc), "invalid_request_error") from exc
            reports.append(_report(summary))
        return reports

    def _report(summary: Any) -> schemas.IngestReport:
        data = summary.to_dict()
        return schemas.IngestReport(**{k: data[k] for k in schemas.IngestReport.model_fields})

    @app.post("/v1/documents/{document_id}/reingest", response_model=schemas.IngestReport, tags=["admin"])
    def reingest(document_id: RowId, _: Annotated[UserInfo, Depends(admin)]) -> schemas.IngestReport:
        """Read a document's file again (admins only); unchanged content is recognised and kept."""
        found = next((d for d in assistant.documents() if d.id == document_id), None)
        if found is None:
            raise ApiError(404, f"no document with id {document_id}", "not_found")
        try:
            return _report(assistant.ingest(found.path, collection=found.collection))
        except SparqError as exc:
            raise ApiError(400, str(exc), "invalid_request_error") from exc

    @app.delete("/v1/documents/{document_id}", status_code=204, tags=["admin"])
    def delete_document(document_id: RowId, _: Annotated[UserInfo, Depends(admin)]) -> None:
        """Delete a document, its chunks and vectors (admins only)."""
        try:
            assistant.delete_document(document_id)
        except SparqError as exc:
            raise ApiError(404, str(exc), "not_found") from exc

    @app.get("/v1/collections", response_model=list[schemas.CollectionRecord], tags=["admin"])
    def collections(_: Annotated[UserInfo, Depends(admin)]) -> list[schemas.CollectionRecord]:
        """Collections with document and chunk counts (admins only)."""
        return [schemas.CollectionRecord(**vars(c)) for c in assistant.collections()]

    @app.post("/v1/collections", response_model=schemas.CollectionRecord, status_code=201, tags=["admin"])
    def create_collection(
        body: schemas.CollectionCreate, _: Annotated[UserInfo, Depends(admin)]
    ) -> schemas.CollectionRecord:
        """Create an empty collection (admins only); uploads create theirs on first use too."""
        try:
            assistant.store.collection_id(body.name, create=True)
        except StoreError as exc:
            raise ApiError(400, str(exc), "invalid_request_error") from exc
        return next(
            schemas.CollectionRecord(**vars(c))
            for c in assistant.collections()
            if c.name == body.name.strip()
        )

    @app.delete("/v1/collections/{name}", status_code=204, tags=["admin"])
    def delete_collection(name: str, _: Annotated[UserInfo, Depends(admin)]) -> None:
        """Delete a collection with its documents and uploads (admins only)."""
        try:
            assistant.delete_collection(name)
        except SparqError as exc:
            raise ApiError(404, str(exc), "not_found") from exc

    @app.post("/v1/feedback", response_model=schemas.FeedbackResponse, tags=["feedback"])
    def feedback(
        body: schemas.FeedbackRequest, user: Annotated[UserInfo, Depends(caller)]
    ) -> schemas.FeedbackResponse:
        """Thumbs up or down on one of the caller's own answers; sending again changes it."""
        try:
            fid = FeedbackLog(assistant.engine).rate(body.query_id, user.name, body.rating, body.comment)
        except FeedbackError as exc:
            raise ApiError(404, str(exc), "not_found") from exc
        return schemas.FeedbackResponse(id=fid, query_id=body.query_id, rating=body.rating)

    @app.get("/v1/conversations", response_model=list[schemas.ConversationSummary], tags=["conversations"])
    def conversations(user: Annotated[UserInfo, Depends(caller)]) -> list[schemas.ConversationSummary]:
        """The caller's saved conversations, most recent first."""
        return [
            schemas.ConversationSummary(**vars(c)) for c in Conversations(assistant.engine).list(user.name)
        ]

    @app.get(
        "/v1/conversations/{conversation_id}",
        response_model=schemas.ConversationDetail,
        tags=["conversations"],
    )
    def conversation(
        conversation_id: RowId, user: Annotated[UserInfo, Depends(caller)]
    ) -> schemas.ConversationDetail:
        """One of the caller's conversations with every message, its citations and cost."""
        try:
            saved = Conversations(assistant.engine).get(user.name, conversation_id)
        except ConversationError as exc:
            raise ApiError(404, str(exc), "not_found") from exc
        return schemas.ConversationDetail(**vars(saved))

    @app.delete("/v1/conversations/{conversation_id}", status_code=204, tags=["conversations"])
    def delete_conversation(conversation_id: RowId, user: Annotated[UserInfo, Depends(caller)]) -> None:
        """Delete one of the caller's conversations."""
        try:
            Conversations(assistant.engine).delete(user.name, conversation_id)
        except ConversationError as exc:
            raise ApiError(404, str(exc), "not_found") from exc

    @app.get("/v1/costs", response_model=schemas.CostsResponse, tags=["costs"])
    def costs(
        user: Annotated[UserInfo, Depends(caller)],
        by: Literal["user", "collection", "day", "model"] = "user",
        since: datetime | None = None,
    ) -> schemas.CostsResponse:
        """Measured cost grouped by user, collection, day or model: everyone's for an admin, else the caller's."""
        from app.costs.reports import rollup

        groups = rollup(assistant.engine, by, since=since, user=None if user.is_admin else user.name)
        budgets = [
            schemas.BudgetStatus(
                scope=u.budget.scope,
                subject=u.budget.subject,
                metric=u.budget.metric,
                period=u.budget.period,
                limit=u.budget.limit,
                used=u.used,
                resets_at=u.period_end,
            )
            for u in assistant.budgets.usage(user.principal())
        ]
        return schemas.CostsResponse(
            by=by,
            since=since,
            budgets=budgets,
            groups=[
                schemas.CostGroup(
                    key=g.key,
                    queries=g.queries,
                    prompt_tokens=g.prompt_tokens,
                    completion_tokens=g.completion_tokens,
                    cost_usd=g.cost_usd,
                    cloud_cost_usd=g.cloud_cost_usd,
                    energy_joules=g.energy_joules,
                    flops=g.flops,
                    dense_flops=g.dense_flops,
                    mean_latency_ms=g.mean_latency_ms,
                    sparsity_saving=g.sparsity_saving,
                )
                for g in groups
            ],
        )

    return app
