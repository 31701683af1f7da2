"""Provider errors as API errors: what a caller sees when the provider refuses or fails a
call made on its behalf (inference, pause, resume). Written once, beside ``ProviderError``."""

from __future__ import annotations

from service.errors import FtqError, InvalidRequest, RateLimited, UpstreamError
from service.providers.base import ErrorKind, ProviderError


def api_error_from_provider(error: ProviderError) -> FtqError:
    """What the caller sees when the provider refuses or fails an inference call."""
    if error.kind == ErrorKind.rate_limited:
        headers = {"Retry-After": str(int(error.retry_after or 1))}
        return RateLimited(error.message, code=error.code, headers=headers)
    if (
        error.status_code is not None
        and 400 <= error.status_code < 500
        and error.status_code != 404
    ):
        return InvalidRequest(error.message, param=error.param, code=error.code)
    return UpstreamError(
        f"The provider failed: {error.message}", code=error.code or "provider_error"
    )
