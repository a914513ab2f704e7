"""What every notification channel is: one page in, success or a classified ChannelError out.

The dispatcher owns retries and the notification log (pages); a channel only delivers one
page once and says whether trying again can help:

    ChannelError (alerts.errors.AlertsError)
        permanent=True    give up now: bad URL, a 4xx that will not change, no secret
        permanent=False   try again later, after retry_after_s when the server named it
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from alerts.errors import AlertsError


@dataclass(frozen=True)
class Outbound:
    page_id: int  # pages.id
    key: str  # the incident key ("incident-42", "ticket-7"): apps deduplicate on it
    channel: str  # 'webhook' | 'fire_service' | 'sms' | 'wecom' | 'dingtalk' | 'feishu' | 'email'
    target: str  # URL (webhook, fire_service), phone number (sms), Apprise URL (chat, email)
    payload: Mapping[str, Any]  # JSON-able page content (alerts.messages.Page): title, body


class ChannelError(AlertsError):
    def __init__(
        self, message: str, *, permanent: bool, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after_s = retry_after_s


class Channel(Protocol):
    name: str

    def send(self, page: Outbound) -> None:
        """Deliver once; return on success, raise ChannelError otherwise. Thread-safe."""
        ...

    def close(self) -> None: ...


class Text(NamedTuple):
    title: str
    body: str       # never empty: the title when the page has no body


def text_of(page: Outbound) -> Text:
    """The title and body for text channels. A page without either is a dispatcher bug, and
    retrying it would not add the text, so it is permanent."""
    title = str(page.payload.get("title") or "")
    body = str(page.payload.get("body") or "") or title
    if not body:
        raise ChannelError(f"page {page.page_id} has neither title nor body", permanent=True)
    return Text(title, body)
