"""Domain errors. Each carries the HTTP status and OpenAI error fields it is rendered with.

The API renders every one of them as ``{"error": {"message", "type", "param", "code"}}``.
Another team's object raises ``NotFound`` exactly like a missing one.
"""

from __future__ import annotations


class FtqError(Exception):
    status_code = 400
    error_type = "invalid_request_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or self.default_code
        self.headers = headers or {}

    def to_body(self) -> dict[str, dict[str, str | None]]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(FtqError):
    status_code = 400


class Unauthenticated(FtqError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDenied(FtqError):
    status_code = 403
    error_type = "permission_error"
    default_code = "insufficient_permissions"


class NotFound(FtqError):
    status_code = 404
    default_code = "not_found"


class Conflict(FtqError):
    status_code = 409
    default_code = "conflict"


class PayloadTooLarge(FtqError):
    status_code = 413
    default_code = "file_too_large"


class RateLimited(FtqError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class UpstreamError(FtqError):
    """The provider failed in a way the caller should see (e.g. a proxied inference call)."""

    status_code = 502
    error_type = "upstream_error"
    default_code = "provider_error"


class BudgetExceeded(FtqError):
    status_code = 402
    default_code = "budget_exceeded"
