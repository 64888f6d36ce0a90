"""Is the configured bucket reachable and writable? Used by `mediajobs storage check` and
by the service's /readyz."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from mediajobs.errors import StorageError
from mediajobs.storage.base import Store
from mediajobs.storage.memory_remote import RemoteMemoryStore

PROBE_PREFIX = "_mediajobs/check/"


@dataclass
class CheckReport:
    provider: str
    bucket: str
    ok: bool = False
    # (step, ok, detail); ok None: the step does not apply to this store (skipped)
    steps: list[tuple[str, bool | None, str]] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None
    seconds: float = 0.0

    def lines(self) -> list[str]:
        head = f"storage {self.provider}://{self.bucket}: {'ok' if self.ok else 'FAILED'}"
        marks = {True: "ok  ", False: "FAIL", None: "skip"}
        body = [f"  {marks[ok]} {step}: {detail}" for step, ok, detail in self.steps]
        tail = [f"  error ({self.error_code}): {self.error}"] if self.error else []
        return [head, *body, *tail, f"  took {self.seconds * 1000:.0f} ms"]


async def check_store(store: Store) -> CheckReport:
    """Write a small probe object, read it back, list it, sign an upload, delete it. A
    ``RemoteMemoryStore`` (the server's memory store, reached over HTTP) cannot list: that
    step is reported as skipped."""
    report = CheckReport(store.provider, store.bucket)
    key = f"{PROBE_PREFIX}{uuid.uuid4()}"
    payload = b"mediajobs storage check " + key.encode()
    started = time.perf_counter()
    step = "write"
    try:
        stored = await store.upload(key, payload, "text/plain")
        report.steps.append(("write", True, f"{stored.size} bytes to {key}"))
        step = "read"
        back = await store.download(key)
        if back != payload:
            raise StorageError("the probe object came back different")
        report.steps.append(("read", True, "same bytes back"))
        step = "list"
        if isinstance(store, RemoteMemoryStore):
            detail = "the server lists its memory store only to itself"
            report.steps.append(("list", None, detail))
        else:
            page = await store.list(PROBE_PREFIX, limit=1000)
            report.steps.append(
                ("list", True, f"{len(page.items)} probe object(s) under {PROBE_PREFIX}")
            )
        step = "sign"
        presigned = await store.presign_upload(key, "text/plain", 1024, expires_in=60)
        report.steps.append(("sign", True, f"{presigned.method} upload URL"))
        step = "delete"
        await store.delete(key)
        if await store.head(key) is not None:
            raise StorageError("the probe object is still there after delete")
        report.steps.append(("delete", True, "probe removed"))
        report.ok = True
    except StorageError as exc:
        report.steps.append((step, False, type(exc).__name__))
        report.error, report.error_code = str(exc), exc.code
    finally:
        report.seconds = time.perf_counter() - started
    return report
