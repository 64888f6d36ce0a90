"""Search routes: ``GET /media/search`` (text to embedding to HNSW, or full-text),
``GET /media/{id}/similar`` (by the item's own embedding) and ``GET /media/{id}/duplicates``
(perceptual hash and sha256). Owner-scoped and ready items only (the review gate), in
pages with an opaque cursor; another user's item is a 404."""

from __future__ import annotations

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from mediajobs.db.vectors import MAX_EF_SEARCH, Neighbour
from mediajobs.service.body import read_query
from mediajobs.service.errors import ApiError
from mediajobs.service.media import shaped_item, visible
from mediajobs.service.models import (
    DuplicateItem,
    DuplicateList,
    PageQuery,
    SearchHit,
    SearchQuery,
    SearchResults,
    json_bytes,
)
from mediajobs.service.paging import decode_offset, encode_offset
from mediajobs.service.state import Services, caller

# Semantic results end at the MAX_EF_SEARCH nearest items (the HNSW candidate list); a
# full-text list and duplicates end at MAX_TEXT_OFFSET (deeper OFFSETs cost more than a
# person pages through).
MAX_SEMANTIC_RESULTS = MAX_EF_SEARCH
MAX_TEXT_OFFSET = 10_000


def _json(answer: BaseModel) -> Response:
    return Response(json_bytes(answer), media_type="application/json")


def _next(offset: int, limit: int, fetched: int, maximum: int) -> str | None:
    """The cursor after a page fetched with ``limit + 1`` rows, or None at the end."""
    following = offset + limit
    return encode_offset(following) if fetched > limit and following < maximum else None


async def _semantic_page(
    svc: Services, hits: list[Neighbour], limit: int, offset: int, maximum: int
) -> tuple[list[SearchHit], str | None]:
    items = [
        await shaped_item(svc, hit.media, SearchHit, score=1.0 - hit.distance)
        for hit in hits[:limit]
    ]
    return items, _next(offset, limit, len(hits), maximum)


async def search_media(request: Request) -> Response:
    """``GET /media/search?q=``: semantic when a model and pgvector can answer (``mode``
    says which answered, ``reason`` why not semantic); ``mode=text`` asks for full-text,
    ``mode=semantic`` refuses (409 ``semantic_search_off``) rather than fall back."""
    svc, principal = caller(request)
    query = read_query(request, SearchQuery)
    text = query.q.strip()
    if not text:
        raise ApiError(400, "invalid_query", "q: give some words to search for")
    limit = query.limit
    reason: str | None = None
    if query.mode != "text":
        state = await svc.semantic.semantic()
        if state.index is not None and state.model is not None:
            offset = decode_offset(query.cursor, maximum=MAX_SEMANTIC_RESULTS)
            vector = await svc.semantic.text_vector(state.model, text)
            hits = await svc.semantic.indexes.search(
                state.index,
                principal.user_id,
                vector,
                limit=min(limit + 1, MAX_SEMANTIC_RESULTS - offset),
                offset=offset,
            )
            items, cursor = await _semantic_page(svc, hits, limit, offset, MAX_SEMANTIC_RESULTS)
            results = SearchResults(
                items=items, next_cursor=cursor, mode="semantic", model=state.index.model
            )
            return _json(results)
        if query.mode == "semantic":
            raise ApiError(409, "semantic_search_off", f"semantic search is off: {state.reason}")
        reason = state.reason
    offset = decode_offset(query.cursor, maximum=MAX_TEXT_OFFSET)
    found = await svc.search.text(principal.user_id, text, limit=limit + 1, offset=offset)
    items = [await shaped_item(svc, hit.media, SearchHit, score=hit.rank) for hit in found[:limit]]
    answer = SearchResults(
        items=items,
        next_cursor=_next(offset, limit, len(found), MAX_TEXT_OFFSET),
        mode="text",
        reason=reason,
    )
    return _json(answer)


async def similar_media(request: Request) -> Response:
    """``GET /media/{id}/similar``: the owner's items nearest to this item's embedding,
    itself left out. 409 ``semantic_search_off`` without pgvector or an index;
    409 ``not_embedded`` for an item image understanding has not embedded (yet)."""
    svc, principal = caller(request)
    record = await visible(svc, principal, request.path_params["media_id"])
    query = read_query(request, PageQuery)
    offset = decode_offset(query.cursor, maximum=MAX_SEMANTIC_RESULTS)
    state = await svc.semantic.semantic(need_model=False)
    if state.index is None:
        raise ApiError(409, "semantic_search_off", f"similar search is off: {state.reason}")
    vector = await svc.semantic.indexes.vector_of(state.index, record.id)
    if vector is None:
        raise ApiError(
            409,
            "not_embedded",
            "this item has no embedding yet: image understanding runs after an item is "
            "ready, at low priority",
        )
    hits = await svc.semantic.indexes.search(
        state.index,
        principal.user_id,
        vector,
        limit=min(query.limit + 1, MAX_SEMANTIC_RESULTS - offset),
        offset=offset,
        exclude=[record.id],
    )
    items, cursor = await _semantic_page(svc, hits, query.limit, offset, MAX_SEMANTIC_RESULTS)
    answer = SearchResults(
        items=items, next_cursor=cursor, mode="semantic", model=state.index.model
    )
    return _json(answer)


async def duplicates_of_media(request: Request) -> Response:
    """``GET /media/{id}/duplicates``: the owner's ready items whose perceptual hash is
    within 8 bits of this item's (resized, re-encoded or lightly edited copies) or whose
    bytes are the same, nearest first."""
    svc, principal = caller(request)
    record = await visible(svc, principal, request.path_params["media_id"])
    query = read_query(request, PageQuery)
    offset = decode_offset(query.cursor, maximum=MAX_TEXT_OFFSET)
    found = await svc.search.duplicates(
        principal.user_id, record.id, limit=query.limit + 1, offset=offset
    )
    items = [
        await shaped_item(svc, d.media, DuplicateItem, bits=d.bits, identical=d.identical)
        for d in found[: query.limit]
    ]
    answer = DuplicateList(
        items=items, next_cursor=_next(offset, query.limit, len(found), MAX_TEXT_OFFSET)
    )
    return _json(answer)
