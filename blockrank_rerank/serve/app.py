"""The FastAPI app: Cohere `/v1/rerank`, `/v2/rerank`, TEI `/rerank`, `/health`, `/metrics`, `/info`.

A rerank request is checked (types by pydantic, counts and token limits here, in a worker thread), queued in the
batcher and answered from the RankedList. Every failure is a JSON body (`schemas.ErrorBody`) naming the field:
400 malformed JSON, 401/403 auth, 404/405 route, 413 body size, 422 bad input, 503 queue full (Retry-After),
504 timeout, and a bare 500 (no traceback) for a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import uuid
from typing import Any, AsyncIterator, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..inputs import check_documents, check_query
from ..results import RankedList
from .auth import PUBLIC_PATHS, AuthError, check_bearer
from .batcher import Batcher, BatchRunner, QueueFullError, ShuttingDownError, rerank_batch_runner
from .limits import InputError, TokenLimits, Truncator, model_limits
from .metrics import Metrics
from .schemas import (
    ApiMeta,
    ApiVersion,
    BilledUnits,
    CohereDocument,
    CohereRerankRequest,
    CohereRerankResponse,
    CohereResult,
    ErrorBody,
    TeiRank,
    TeiRerankRequest,
    Tokens,
)
from .settings import ServeSettings

logger = logging.getLogger(__name__)
ROUTES = ("/v1/rerank", "/v2/rerank", "/rerank", "/health", "/metrics", "/info", "/openapi.json")
ERROR_TYPES = {400: "validation", 401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed",
               413: "payload_too_large", 422: "validation", 499: "client_closed", 503: "overloaded",
               504: "timeout"}  # fmt: skip


def error_response(status: int, message: str, field: Optional[str] = None, headers: Optional[dict] = None) -> Response:
    """The JSON error body every failure gets."""
    body = ErrorBody(message=message, error=message, error_type=ERROR_TYPES.get(status, "server"), field=field)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


def field_name(location: tuple) -> str:
    """A pydantic error location as a field path: ("body", "documents", 3, "str") -> "documents[3]"."""
    parts = [part for part in location[1:] if not (isinstance(part, str) and is_type_tag(part))]
    name = ""
    for part in parts:
        name += f"[{part}]" if isinstance(part, int) else (f".{part}" if name else str(part))
    return name or "body"


def is_type_tag(part: str) -> bool:
    """Whether an error location part names a union member or validator (pydantic's "str", "dict[str,any]",
    "function-after[...]") rather than a field."""
    return part in ("str", "int", "bool") or "[" in part or "(" in part


class Guard:
    """ASGI middleware around the app: bearer auth, the body size limit and per-request metrics."""

    def __init__(self, app: ASGIApp, settings: ServeSettings, metrics: Metrics) -> None:
        self.app, self.settings, self.metrics = app, settings, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, path, status = time.perf_counter(), scope["path"], [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            refusal = self._refusal(Headers(scope=scope), path)
            if refusal is not None:
                await refusal(scope, receive, send_status)
                return
            await self.app(scope, self._limited(receive), send_status)
        finally:
            self.metrics.observe_response(path if path in ROUTES else "other", status[0], time.perf_counter() - start)

    def _refusal(self, headers: Headers, path: str) -> Optional[Response]:
        """The error response for a request refused before it is read (auth, declared size), else None."""
        key = self.settings.api_key
        if key is not None and path not in PUBLIC_PATHS:
            try:
                check_bearer(headers.get("authorization"), key)
            except AuthError as error:
                extra = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
                return error_response(error.status, error.message, "Authorization", extra)
        length = headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                return error_response(400, f"Content-Length must be a number, got {length!r}", "Content-Length")
            if int(length) > self.settings.max_body_bytes:
                return self._too_large()
        return None

    def _too_large(self) -> Response:
        return error_response(413, f"request body exceeds {self.settings.max_body_bytes} bytes", "body")

    def _limited(self, receive: Receive) -> Receive:
        """`receive` that counts body bytes (chunked bodies declare no length) and stops past the limit."""
        seen = [0]

        async def limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                seen[0] += len(message.get("body", b""))
                if seen[0] > self.settings.max_body_bytes:
                    raise StarletteHTTPException(413, f"request body exceeds {self.settings.max_body_bytes} bytes")
            return message

        return limited


class Service:
    """What the routes share: ranker, settings, metrics, limits, truncator and batcher."""

    def __init__(self, ranker: Any, settings: ServeSettings, runner: Optional[BatchRunner] = None) -> None:
        self.ranker, self.settings = ranker, settings
        self.metrics = Metrics()
        model = model_limits(ranker, settings.max_documents)
        self.limits = TokenLimits(
            per_document=settings.max_tokens_per_doc or model.per_document,
            per_query=settings.max_query_tokens or model.per_query,
        )
        self.truncator = Truncator(ranker.engine.tokenizer)
        self.batcher = Batcher(
            runner or rerank_batch_runner(ranker),
            max_queue=settings.max_queue,
            max_batch_size=settings.max_batch_size,
            wait_s=settings.batch_wait_ms / 1000,
            metrics=self.metrics,
        )

    def prepare(
        self,
        query: str,
        texts: list[str],
        field: str,
        per_document: int,
        cut_documents: bool,
        cut_query: bool,
        keep: str,
    ) -> tuple[str, list[str], int, int]:
        """Checked query and documents within the token limits, their total tokens and how many were cut
        (runs in a worker thread: tokenising a long request must not hold the event loop)."""
        if not texts:
            raise InputError(422, f"{field} must not be empty", field)
        if len(texts) > self.settings.max_documents:
            raise InputError(
                422, f"{len(texts)} {field} exceed this server's limit of {self.settings.max_documents}", field
            )
        try:
            query = check_query(query)
        except (TypeError, ValueError) as error:
            raise InputError(422, str(error), "query") from None
        try:
            contents = check_documents(texts, self.settings.max_documents).contents
        except (TypeError, ValueError) as error:
            raise InputError(422, str(error), field) from None
        (query,), (query_tokens,) = self.truncator.fit([query], self.limits.per_query, cut_query, keep, "query")
        fitted, counts = self.truncator.fit(contents, per_document, cut_documents, keep, field)
        cut = sum(1 for before, after in zip(contents, fitted) if before != after)
        return query, fitted, query_tokens + sum(counts), cut

    async def rank(self, query: str, contents: list[str], request: Request) -> RankedList:
        """Queue one request and wait for its RankedList, at most `request_timeout_s`; a client that disconnects
        meanwhile has its queued work dropped (499)."""
        try:
            future = self.batcher.submit(query, contents)
        except QueueFullError as error:
            raise InputError(503, f"server busy: {error}; retry later", None) from None
        except ShuttingDownError as error:
            raise InputError(503, str(error), None) from None
        watcher = asyncio.ensure_future(wait_for_disconnect(request))
        try:
            done, _ = await asyncio.wait(
                {future, watcher}, timeout=self.settings.request_timeout_s, return_when="FIRST_COMPLETED"
            )
        finally:
            watcher.cancel()
        if future not in done:
            future.cancel()  # the batcher skips it unless its batch already runs
            if watcher in done:
                raise InputError(499, "the client closed the connection before the answer", None)
            raise InputError(504, f"no answer within {self.settings.request_timeout_s} s", None)
        try:
            result = future.result()
        except (TypeError, ValueError) as error:
            raise InputError(422, str(error), None) from None
        self.metrics.documents.inc(len(contents))
        return result


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client has gone away (the request body is already read, so only a disconnect is left)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def cohere_texts(request: CohereRerankRequest, version: int) -> list[str]:
    """The text ranked for each Cohere document: a string, an object's "text", or (v1) its `rank_fields` values."""
    texts = []
    for position, document in enumerate(request.documents):
        if isinstance(document, str):
            texts.append(document)
            continue
        if version == 1 and request.rank_fields:
            texts.append("\n".join(f"{key}: {document[key]}" for key in request.rank_fields if key in document))
            continue
        text = document.get("text")
        if not isinstance(text, str):
            raise InputError(422, f"documents[{position}] needs a string 'text'", f"documents[{position}].text")
        texts.append(text)
    return texts


def create_app(ranker: Any, settings: Optional[ServeSettings] = None, runner: Optional[BatchRunner] = None) -> FastAPI:
    """The server's ASGI app over a loaded `ranker` (a `BlockRank`); `runner` replaces the batch call (packing)."""
    settings = settings or ServeSettings()
    service = Service(ranker, settings, runner)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.batcher.start()
        logger.info("blockrank serve: ready (%s)", ranker)
        try:
            yield
        finally:
            await service.batcher.stop()  # uvicorn has let in-flight requests finish; the queue is drained

    # /openapi.json describes the routes; the HTML docs pages (which load scripts from a CDN) are off
    app = FastAPI(title="blockrank serve", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service

    @app.exception_handler(InputError)
    async def input_error(request: Request, error: InputError) -> Response:
        headers = {"Retry-After": str(settings.retry_after_s)} if error.status == 503 else None
        return error_response(error.status, error.message, error.field, headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {"loc": ("body",), "msg": "invalid body", "type": ""}
        if first.get("type") == "json_invalid":
            detail = first.get("ctx", {}).get("error", "JSON decode error")
            return error_response(400, f"body is not valid JSON: {detail}", "body")
        name = field_name(tuple(first.get("loc", ("body",))))
        return error_response(422, f"{name}: {first.get('msg', 'invalid value')}", name)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        if error.status_code == 404:
            message = f"no route {request.method} {request.url.path}; routes: {', '.join(ROUTES)}"
        elif error.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(error.detail)
        return error_response(error.status_code, message, "body" if error.status_code == 413 else None)

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> Response:
        logger.exception("unexpected error on %s", request.url.path)
        return error_response(500, "internal server error (logged on the server)")

    async def cohere(request: CohereRerankRequest, version: int, http_request: Request) -> CohereRerankResponse:
        limit = service.limits.per_document
        if request.max_tokens_per_doc is not None:
            limit = min(limit, request.max_tokens_per_doc)
        texts = cohere_texts(request, version)
        query, contents, tokens, cut = await asyncio.to_thread(
            service.prepare, request.query, texts, "documents", limit, True, False, "Right"
        )
        service.metrics.tokens.inc(tokens)
        ranked = await service.rank(query, contents, http_request)
        shown = ranked[: request.top_n] if request.top_n is not None else ranked.documents
        echo = bool(request.return_documents)
        results = [
            CohereResult(
                index=doc.index,
                relevance_score=doc.thresholded_score,
                document=echo_document(request.documents[doc.index], version) if echo else None,
            )
            for doc in shown
        ]
        warnings = [f"{cut} documents truncated to {limit} tokens"] if cut else None
        meta = ApiMeta(
            api_version=ApiVersion(version=str(version)),
            billed_units=BilledUnits(search_units=math.ceil(len(contents) / 100)),
            tokens=Tokens(input_tokens=tokens),
            warnings=warnings,
        )
        return CohereRerankResponse(id=str(uuid.uuid4()), results=results, meta=meta)

    @app.post("/v1/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True)
    async def rerank_v1(request: CohereRerankRequest, http_request: Request) -> CohereRerankResponse:
        """Cohere's v1 rerank: documents as strings or objects, `rank_fields`, `return_documents`."""
        return await cohere(request, 1, http_request)

    @app.post("/v2/rerank", response_model=CohereRerankResponse, response_model_exclude_none=True)
    async def rerank_v2(request: CohereRerankRequest, http_request: Request) -> CohereRerankResponse:
        """Cohere's v2 rerank: documents as strings, `top_n`, `max_tokens_per_doc`."""
        return await cohere(request, 2, http_request)

    @app.post("/rerank", response_model=list[TeiRank], response_model_exclude_none=True)
    async def rerank_tei(request: TeiRerankRequest, http_request: Request) -> list[TeiRank]:
        """text-embeddings-inference's rerank: every text, best first; `raw_scores` gives the attention shares."""
        cut = bool(request.truncate) or settings.auto_truncate
        limit = service.limits.per_document
        query, contents, tokens, _ = await asyncio.to_thread(
            service.prepare, request.query, request.texts, "texts", limit, cut, cut, request.truncation_direction
        )
        service.metrics.tokens.inc(tokens)
        ranked = await service.rank(query, contents, http_request)
        return [
            TeiRank(
                index=doc.index,
                score=doc.score if request.raw_scores else doc.thresholded_score,
                text=request.texts[doc.index] if request.return_text else None,
            )
            for doc in ranked
        ]

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """200 once the model is loaded (it is loaded before the server starts listening)."""
        return {"status": "ok", "model": ranker.engine.name}

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(service.metrics.exposition(), media_type=service.metrics.content_type)

    @app.get("/info")
    async def info() -> dict[str, Any]:
        """The model, its scoring settings, this server's limits and batching."""
        engine, config = ranker.engine, ranker.config
        return {
            "model_id": engine.name,
            "version": __version__,
            "scoring_mode": config.scoring_mode,
            "scoring_layer": engine.scoring_layer,
            "num_layers": engine.num_layers,
            "max_block_tokens": config.max_block_tokens,
            "long_documents": config.long_documents,
            "max_document_blocks": config.max_document_blocks,
            "device": str(engine.device),
            "dtype": config.dtype,
            "max_input_length": service.limits.per_document,
            "limits": {
                "max_documents": settings.max_documents,
                "max_tokens_per_doc": service.limits.per_document,
                "max_query_tokens": service.limits.per_query,
                "max_body_bytes": settings.max_body_bytes,
                "request_timeout_s": settings.request_timeout_s,
                "auto_truncate": settings.auto_truncate,
            },
            "batching": {
                "max_queue": settings.max_queue,
                "max_batch_size": settings.max_batch_size,
                "batch_wait_ms": settings.batch_wait_ms,
            },
            "auth": settings.api_key is not None,
        }

    app.add_middleware(Guard, settings=settings, metrics=service.metrics)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def echo_document(document: Union[str, dict[str, Any]], version: int) -> CohereDocument:
    """The document a result echoes: v1 every field the caller sent, v2 its text."""
    if isinstance(document, str):
        return CohereDocument(text=document)
    text = document.get("text")
    text = text if isinstance(text, str) else ""  # rank_fields documents need no "text"
    return CohereDocument(**{**document, "text": text}) if version == 1 else CohereDocument(text=text)
