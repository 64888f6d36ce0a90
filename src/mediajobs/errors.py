"""The exceptions mediajobs raises. Everything derives from one root::

    MediaJobsError
    ├── ConfigError            a setting is missing, malformed or contradicts another
    ├── DatabaseError          Postgres could not be reached or answered unexpectedly
    ├── AuthError              a request's credentials are missing, invalid or expired
    ├── ImageRejected          an upload is not an acceptable image (a stable ``code``)
    ├── PolicyInvalid          a site-policy change that makes no sense (db.policies)
    │   └── UnknownProfile     an ingest profile the site policy does not have
    ├── CollectionRefused      a collection sync that cannot apply (db.collections; a ``code``)
    ├── TooManyTags            an edit past an item's limit of its owner's tags (db.tags)
    ├── SourceOwnedElsewhere   an ingest source already belongs to another owner (db.ingest)
    ├── SourceOverlaps         an ingest source holds or lies inside another source (db.ingest)
    ├── SourceReowned          a retry through a run of a source's previous owner (ingest.runs)
    ├── SourceInvalid          an ingest SOURCE that is no readable directory or known bucket
    ├── SourceFileError        a source file could not be read as scanned (ingest.source)
    │   ├── FileChanged        its size or mtime moved: still being written (deferred)
    │   ├── FileVanished       it is gone
    │   ├── FileTooLarge       it is over the profile's byte limit
    │   └── FileUnreadable     permission or I/O error
    ├── WatermarkLogoInvalid   an ingest profile's logo is no usable image (imaging.watermark)
    ├── ModelInvalid           a CLIP model directory or tag vocabulary that cannot be used (vision)
    ├── ReindexRefused         a model switch that cannot start: no pgvector, no such model
    ├── ImagingFailed          the imaging process could not finish an image (handlers.imaging_pool)
    │   ├── ImagingCrashed     it died while working on the image
    │   ├── ImagingOutOfMemory it ran out of its memory limit
    │   └── ImagingTimeout     it ran past the time limit
    ├── ApiError               a route answers with the error envelope (service.errors)
    ├── StorageError           object storage refused or failed an operation
    │   ├── InvalidKey         a key or key part that could escape its prefix, or is malformed
    │   ├── ObjectNotFound     no object under that key
    │   ├── StorageDenied      the provider refused our credentials, signature or bucket
    │   ├── StorageUnavailable the provider could not be reached or failed (retry later)
    │   └── StoreNotConfigured a locator names a provider/bucket this deployment cannot reach
    └── JobError               raised by handlers (or the queue) about one job
        ├── Retry              retry this job after ``delay`` seconds (or the default backoff)
        ├── JobFailed          fail this job for good, with a stable machine-readable ``code``
        ├── JobCancelled       the job was cancelled while it ran; stop cooperatively
        └── LeaseLost          this worker no longer owns the job (fencing rejected a write)

Handlers raise ``Retry`` or ``JobFailed``; any other exception escaping a handler is treated
as a retryable ``internal_error``.
"""

from __future__ import annotations


class MediaJobsError(Exception):
    """Root of every mediajobs exception."""


class ConfigError(MediaJobsError):
    """A setting is missing, malformed or contradicts another; names the variable."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


class DatabaseError(MediaJobsError):
    """Postgres could not be reached or answered unexpectedly."""


class AuthError(MediaJobsError):
    """Credentials are missing, invalid or expired (HTTP 401, or 503 when authentication
    is not configured); ``code`` is machine-readable, e.g. ``token_expired``."""

    def __init__(self, code: str, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class ImageRejected(MediaJobsError):
    """An upload is not an image we accept, or breaks the site policy; ``code`` is one of
    ``empty_file``, ``file_too_large``, ``unsupported_type``, ``corrupt_image``,
    ``too_small``, ``aspect_ratio_out_of_range``, ``too_many_pixels``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __reduce__(self) -> tuple[type[ImageRejected], tuple[str, str]]:
        # Crosses the imaging process boundary intact.
        return (ImageRejected, (self.code, self.message))


class StorageError(MediaJobsError):
    """Object storage refused or failed an operation; carries a stable ``code``."""

    code = "storage_error"
    retryable = False


class InvalidKey(StorageError):
    """A key (or a user id or filename that goes into one) that could escape its prefix."""

    code = "invalid_key"


class ObjectNotFound(StorageError):
    """No object under that key."""

    code = "object_not_found"


class StorageDenied(StorageError):
    """The provider refused our credentials, signature or bucket."""

    code = "storage_denied"


class StorageUnavailable(StorageError):
    """The provider could not be reached or failed; worth retrying later."""

    code = "storage_unavailable"
    retryable = True


class StoreNotConfigured(StorageError):
    """A locator names a provider and bucket this deployment has no store for."""

    code = "store_not_configured"


class JobError(MediaJobsError):
    """Something about one job; carries a stable ``code``."""

    code = "job_error"
    retryable = False

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self)

    def to_dict(self) -> dict[str, object]:
        return {"code": self.code, "message": self.message, "retryable": self.retryable}


class Retry(JobError):
    """Retry this job later: after ``delay`` seconds, or the queue's backoff when None."""

    code = "retry"
    retryable = True

    def __init__(
        self, message: str = "", *, delay: float | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        if delay is not None and delay < 0:
            raise ValueError("Retry delay must be >= 0")
        self.delay = delay


class JobFailed(JobError):
    """Fail this job now; ``code`` says why in a stable, machine-readable way.

    ``retryable=True`` marks a failure its owner may retry on request (a review with no
    provider configured yet): the queue does not retry it by itself, but the recorded error
    says ``retryable: true``."""

    code = "failed"
    retryable = False

    def __init__(
        self, message: str = "", *, code: str | None = None, retryable: bool = False
    ) -> None:
        super().__init__(message, code=code)
        self.retry_on_request = retryable

    def to_dict(self) -> dict[str, object]:
        return {**super().to_dict(), "retryable": self.retry_on_request}


class JobCancelled(JobError):
    """The job was cancelled while it ran."""

    code = "cancelled"
    retryable = False


class LeaseLost(JobError):
    """This worker no longer owns the job: its lease expired and another attempt took over."""

    code = "lease_lost"
    retryable = False
