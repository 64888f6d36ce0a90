"""Parts of image understanding without I/O: which variant media.embed reads, ranked-list
cursors, pgvector's text form."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import numpy as np
import pytest

from mediajobs.db.media import MediaRecord, MediaStatus
from mediajobs.db.vectors import parse_vector, vector_text
from mediajobs.handlers.understand import pick_variant
from mediajobs.service.errors import ApiError
from mediajobs.service.paging import decode_offset, encode_offset


def record(variants: dict[str, object]) -> MediaRecord:
    now = datetime.now(UTC)
    values: dict[str, object] = dict.fromkeys(MediaRecord.__dataclass_fields__)
    values.update(
        id=uuid.uuid4(), owner_id="a", kind="image", purpose="gallery",
        status=MediaStatus.READY, source_locator="memory://m/k", variants=variants,
        sort_order=0, created_at=now, updated_at=now, tags_text="",
    )  # fmt: skip
    return MediaRecord(**values)  # type: ignore[arg-type]


def variant(name: str, width: int, height: int) -> dict[str, object]:
    return {"locator": f"memory://m/{name}", "width": width, "height": height}


def test_the_smallest_variant_covering_the_models_input_is_read() -> None:
    item = record(
        {
            "detail": variant("detail", 1600, 1200),
            "thumb": variant("thumb", 320, 240),
            "card": variant("card", 640, 480),
        }
    )
    assert str(pick_variant(item, 224)) == "memory://m/thumb"
    assert str(pick_variant(item, 300)) == "memory://m/card"  # thumb's 240 is too short
    assert str(pick_variant(item, 5000)) == "memory://m/detail"  # none covers it: the largest
    assert pick_variant(record({}), 224) is None
    panorama = record({"thumb": variant("thumb", 320, 80), "card": variant("card", 640, 160)})
    assert str(pick_variant(panorama, 100)) == "memory://m/card"


def test_ranked_list_cursors_round_trip_and_refuse_others() -> None:
    assert decode_offset(None, maximum=10) == 0
    assert decode_offset(encode_offset(7), maximum=10) == 7
    for bad in ("not-a-cursor", encode_offset(11), "bzotMQ", "eDox"):  # past max, o:-1, x:1
        with pytest.raises(ApiError) as caught:
            decode_offset(bad, maximum=10)
        assert caught.value.code == "invalid_cursor"


def test_vectors_round_trip_through_pgvectors_text_form() -> None:
    vector = np.random.default_rng(1).standard_normal(16).astype(np.float32)
    text = vector_text(vector)
    assert text.startswith("[") and text.count(",") == 15
    np.testing.assert_array_equal(parse_vector(text), vector)
