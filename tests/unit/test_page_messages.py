"""The media library page explains every failure in words: each error code an item can carry
has a sentence in the page's MESSAGES (the code is shown next to it)."""

from __future__ import annotations

import re

from tests.conftest import REPO

SRC = REPO / "src" / "mediajobs"
APP_JS = SRC / "service" / "static" / "app.js"


def page_messages() -> set[str]:
    source = APP_JS.read_text()
    block = source[
        source.index("const MESSAGES = {") : source.index("};", source.index("MESSAGES"))
    ]
    return set(re.findall(r"^\s+([a-z_]+): \"", block, re.MULTILINE))


def item_error_codes() -> set[str]:
    """Codes from the documented table of failures, and every code a handler or the imaging
    code can raise."""
    docs = (REPO / "docs" / "media.md").read_text()
    table = docs[docs.index("### Error codes") :]
    table = table[: table.index("\n\n", table.index("| code"))]
    codes = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.MULTILINE))
    for path in [*(SRC / "handlers").glob("*.py"), *(SRC / "imaging").glob("*.py")]:
        text = path.read_text()
        codes |= set(re.findall(r"\bcode=\"([a-z_]+)\"", text))
        codes |= set(re.findall(r"ImageRejected\(\s*\"([a-z_]+)\"", text))
    return codes


def test_every_error_code_an_item_can_carry_has_a_sentence_on_the_page() -> None:
    codes = item_error_codes()
    assert {"corrupt_image", "too_small", "review_provider_disabled", "source_missing"} <= codes
    missing = codes - page_messages()
    assert not missing, f"add a sentence for these codes to MESSAGES in {APP_JS}: {missing}"
