"""The admin's CSRF token and response headers.

Every form carries the app's token in a hidden ``csrf`` field, and every
POST without the right one is refused (403) before anything is read or
written. The token is an HMAC of a secret: random per app by default, or
derived from ``secret=`` so that several processes behind one load balancer
agree. It stops another site from submitting forms in an admin's browser;
it is no authentication: mount the admin behind your own
(``dependencies=[...]``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

__all__ = ["HEADERS", "csrf_token", "same_token"]

#: Sent with every page: no framing, no inline script or style, nothing loaded from elsewhere.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def csrf_token(secret: str | bytes | None) -> str:
    """The token of an app whose secret is ``secret`` (None: a random one, new for every app)."""
    key = secret.encode() if isinstance(secret, str) else secret if secret is not None else secrets.token_bytes(32)
    return hmac.new(key, b"repocket admin csrf", hashlib.sha256).hexdigest()


def same_token(expected: str, given: str | None) -> bool:
    """Whether ``given`` is ``expected``, compared in constant time."""
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())
