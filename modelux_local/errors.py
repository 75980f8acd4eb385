"""One documented exception tree. The proxy maps each to an OpenAI-shaped error response."""
from __future__ import annotations


class ModeluxError(Exception):
    """Base of every error modelux-local raises on purpose."""

    status = 500
    type = "server_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if param is not None:
            self.param = param


class ConfigError(ModeluxError):
    """A config file that cannot serve: names the file, line and key."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None, key: str | None = None):
        where = file or ""
        if line:
            where += f":{line}"
        super().__init__(f"{where}: {message}" if where else message)
        self.file, self.line, self.key = file, line, key


class BadRequest(ModeluxError):
    status = 400
    type = "invalid_request_error"


class BodyTooLarge(ModeluxError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Unauthorized(ModeluxError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class ModelNotFound(ModeluxError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"
    param = "model"


class NotFound(ModeluxError):
    status = 404
    type = "not_found_error"
    code = "not_found"


class RunBlocked(ModeluxError):
    """402: the run is over budget (`run_budget_exceeded`) or aborted (`run_aborted`)."""

    status = 402
    type = "insufficient_quota"


class AllTargetsFailed(ModeluxError):
    status = 502
    type = "upstream_error"
    code = "all_targets_failed"


class InternalError(ModeluxError):
    """500: a bug of ours after a call was admitted; the call is still recorded and settled."""

    status = 500
    type = "server_error"
    code = "internal_error"


class UpstreamError(ModeluxError):
    """One failed upstream attempt.

    `category` says whether routing may retry or fall back: "429", "5xx", "timeout",
    "connect", or None for errors that must pass through to the client (4xx).
    `body` is an OpenAI-shaped error body (bytes) when the upstream sent one.
    """

    status = 502
    type = "upstream_error"

    def __init__(self, message: str, *, status: int | None, category: str | None, body: bytes | None = None):
        super().__init__(message)
        self.upstream_status = status
        self.category = category
        self.body = body
        self.retry_after_s: float | None = None  # the upstream's Retry-After, when it sent one
        if status is not None and category is None:
            self.status = status  # client errors pass through with their own status


def category_for_status(status: int) -> str | None:
    """How routing treats an HTTP status from an upstream."""
    if status == 429:
        return "429"
    if status >= 500 or status == 408:
        return "5xx"  # 529 (Anthropic overloaded) is a 5xx too
    return None


class StorageUnavailable(ModeluxError):
    """503: the database cannot be written now (disk full, read-only, locked); the proxy keeps serving."""

    status = 503
    type = "server_error"
    code = "storage_unavailable"
