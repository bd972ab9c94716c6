"""Bearer-token auth: 401 without a token, 403 with a wrong one; the comparison takes constant time."""

from __future__ import annotations

import hmac
from typing import Optional

PUBLIC_PATHS = frozenset({"/health"})  # load balancers probe it without credentials


class AuthError(Exception):
    """A request that may not pass: its HTTP status (401 or 403) and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_bearer(authorization: Optional[str], api_key: str) -> None:
    """Pass when `authorization` is `Bearer <api_key>`; AuthError(401) when absent or not bearer, (403) when wrong."""
    if not authorization:
        raise AuthError(401, "missing Authorization header: send 'Authorization: Bearer <api key>'")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError(401, "Authorization must be 'Bearer <api key>'")
    if not hmac.compare_digest(token.strip().encode("utf-8"), api_key.encode("utf-8")):
        raise AuthError(403, "invalid API key")
