"""Request and response bodies, as Cohere's rerank API (v1, v2) and TEI's `/rerank` define them.

Sources: the cohere Python SDK's `rerank` request bodies and `RerankResponse`/`V2RerankResponse` types (v1 takes
documents as strings or objects with "text", `rank_fields`, `return_documents`; v2 takes strings and
`max_tokens_per_doc`, and older v2 clients also objects and `return_documents`), and text-embeddings-inference's
OpenAPI `RerankRequest`/`Rank` (`truncation_direction` "Left"/"Right"). Types are strict: a number where a string
belongs is a 422 naming the field, never coerced. Unknown fields are ignored, so newer clients keep working.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, field_validator

DocumentItem = Union[StrictStr, dict[str, Any]]


class Request(BaseModel):
    """Base of every request body: unknown fields ignored, strict types."""

    model_config = ConfigDict(extra="ignore", strict=True)


class CohereRerankRequest(Request):
    """POST /v1/rerank and /v2/rerank (fields of both versions; each route reads the ones its version has)."""

    model: Optional[StrictStr] = None  # echoed nowhere: the server has one model
    query: StrictStr
    documents: list[DocumentItem]
    top_n: Optional[StrictInt] = Field(default=None, ge=1)
    max_tokens_per_doc: Optional[StrictInt] = Field(default=None, ge=1)  # v2: truncate documents to this
    return_documents: Optional[StrictBool] = None  # v1 (and early v2): echo each document in its result
    rank_fields: Optional[list[StrictStr]] = None  # v1: object keys whose values are ranked, in this order
    max_chunks_per_doc: Optional[StrictInt] = Field(default=None, ge=1)  # v1: accepted, ignored
    priority: Optional[StrictInt] = None  # v2: accepted, ignored (one queue, first come first served)
    relevant_spans: Optional[Any] = None  # v2: accepted; no spans are returned (the field is optional)


class CohereDocument(BaseModel):
    """A document echoed back in a result (v1: every field the caller sent; v2: its text)."""

    model_config = ConfigDict(extra="allow")

    text: str


class CohereResult(BaseModel):
    """One ranked document: its index in the request and its relevance score in [0, 1]."""

    index: int
    relevance_score: float
    document: Optional[CohereDocument] = None


class ApiVersion(BaseModel):
    version: str


class BilledUnits(BaseModel):
    search_units: float


class Tokens(BaseModel):
    input_tokens: float


class ApiMeta(BaseModel):
    api_version: ApiVersion
    billed_units: BilledUnits
    tokens: Tokens
    warnings: Optional[list[str]] = None


class CohereRerankResponse(BaseModel):
    """The response of both Cohere routes: `results` best first."""

    id: str
    results: list[CohereResult]
    meta: ApiMeta


class TeiRerankRequest(Request):
    """POST /rerank (text-embeddings-inference)."""

    query: StrictStr
    texts: list[StrictStr]
    truncate: Optional[StrictBool] = False  # over-long inputs: cut them (True) or 422 (False, None)
    truncation_direction: Literal["Left", "Right", "left", "right"] = "Right"  # which end a cut removes
    raw_scores: StrictBool = False  # True: each text's share of the attention instead of the calibrated score
    return_text: StrictBool = False

    @field_validator("truncation_direction")
    @classmethod
    def _capitalised(cls, value: str) -> str:
        return value.capitalize()


class TeiRank(BaseModel):
    """One ranked text (TEI's `Rank`)."""

    index: int
    score: float
    text: Optional[str] = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx body: `message` (Cohere's key) and `error`/`error_type` (TEI's), and the field at fault."""

    message: str
    error: str
    error_type: str
    field: Optional[str] = None
