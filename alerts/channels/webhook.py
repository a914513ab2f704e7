"""Signed webhooks: a worker's own `webhook` channel and the fire-service (119) forward.

Each page is POSTed as compact UTF-8 JSON (the page payload) with these headers:

    Content-Type: application/json; charset=utf-8
    X-Firegrid-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>
    X-Firegrid-Page-Id: <pages.id>
    X-Firegrid-Key: <incident key, e.g. incident-42>   (deduplicate on this)
    Idempotency-Key: page-<pages.id>                     (the same on every retry)

A receiver checks the signature over the raw body bytes, before parsing them:

    from alerts.channels.webhook import verify_signature
    if not verify_signature(secret, request.headers["X-Firegrid-Signature"], raw_body):
        return 401

verify_signature rejects a timestamp more than tolerance_s (300 s) away from the
receiver's clock, so a captured request cannot be replayed later. Several v1= entries may
appear (Stripe-style); any one matching is enough, which allows rotating the secret.

Outcome classes: 2xx delivered; 408, 425, 429, 5xx, timeouts and connection failures are
transient (Retry-After honoured); any other status, an invalid URL or scheme, and a missing
alerts.webhook_secret are permanent. Redirects are not followed: a 3xx means the
configured URL is wrong, and following it would send a signed alarm somewhere unreviewed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

import httpx

from alerts.channels.base import ChannelError, Outbound

SIGNATURE_HEADER = "X-Firegrid-Signature"
_TRANSIENT_STATUS = {408, 425, 429}


def _mac(secret: bytes, t: int, body: bytes) -> str:
    return hmac.new(secret, f"{t}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str | bytes, body: bytes, t: int) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return f"t={t},v1={_mac(key, t, body)}"


def verify_signature(
    secret: str | bytes,
    header: str,
    body: bytes,
    tolerance_s: float = 300,
    *,
    now: float | None = None,
) -> bool:
    """True when `header` (X-Firegrid-Signature) signs exactly `body` with `secret` and its
    timestamp is within tolerance_s of now."""
    key = secret.encode() if isinstance(secret, str) else secret
    t: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            t = int(value)
        elif name == "v1":
            macs.append(value)
    if t is None or not macs:
        return False
    if abs((time.time() if now is None else now) - t) > tolerance_s:
        return False
    expected = _mac(key, t, body)
    return any(hmac.compare_digest(expected, m) for m in macs)


def retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: either delay-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


class WebhookChannel:
    """POSTs pages to page.target, or always to `url` when given (the fire-service hook,
    whose address is configuration, not per worker). One httpx.Client, which is safe to
    share between the dispatcher's threads."""

    def __init__(
        self, name: str, *, secret: str | None, timeout_s: float, url: str | None = None
    ) -> None:
        self.name = name
        self._secret = secret.encode() if secret else None
        self._url = url
        self._client = httpx.Client(
            timeout=timeout_s,
            follow_redirects=False,
            headers={"User-Agent": "firegrid-alerts"},
        )

    def send(self, page: Outbound) -> None:
        if self._secret is None:
            # Refuse rather than send unsigned: a receiver that cannot check the sender
            # would act on anyone's "fire".
            raise ChannelError("webhooks need alerts.webhook_secret", permanent=True)
        url = self._url or page.target
        body = json.dumps(page.payload, ensure_ascii=False, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            SIGNATURE_HEADER: signature_header(self._secret, body, int(time.time())),
            "X-Firegrid-Page-Id": str(page.page_id),
            "X-Firegrid-Key": page.key,
            "Idempotency-Key": f"page-{page.page_id}",
        }
        where = f"{self.name} to {_host(url)}"
        try:
            response = self._client.post(url, content=body, headers=headers)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as e:
            raise ChannelError(f"{self.name}: invalid URL: {e}", permanent=True) from e
        except httpx.TimeoutException as e:
            raise ChannelError(f"{where}: timed out ({type(e).__name__})",
                               permanent=False) from e
        except httpx.TransportError as e:
            # Refused, reset, DNS failure: the receiver may be back soon; the dispatcher's
            # max_attempts bounds how long we keep hoping.
            raise ChannelError(f"{where}: {type(e).__name__}: {e}", permanent=False) from e
        status = response.status_code
        if 200 <= status < 300:
            return
        detail = f"{where}: HTTP {status} {response.text[:200]!r}"
        if status in _TRANSIENT_STATUS or status >= 500:
            raise ChannelError(detail, permanent=False,
                               retry_after_s=retry_after_s(response.headers.get("Retry-After")))
        if 300 <= status < 400:
            detail += f" (redirect to {response.headers.get('Location')!r} not followed)"
        raise ChannelError(detail, permanent=True)

    def close(self) -> None:
        self._client.close()


def _host(url: str) -> str:
    # Only the host goes into error messages: paths and queries often carry tokens.
    try:
        return urlsplit(url).hostname or "?"
    except ValueError:
        return "?"
