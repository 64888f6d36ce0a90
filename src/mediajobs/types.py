"""Value types shared by every layer, so that no layer imports another only for a type.

``JSON`` is a value that ``json.dumps`` accepts: a job's payload and result, an event's data,
an image's metadata. It is ``Any`` on purpose: payloads cross the queue as decoded JSON whose
shape each handler checks at its own boundary (the service's models, a handler's own reads),
and a recursive union would force a cast at every one of those reads without checking more.
"""

from __future__ import annotations

from typing import Any, TypeAlias

JSON: TypeAlias = Any

__all__ = ["JSON"]
