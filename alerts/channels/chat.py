"""Chat robots (WeCom, DingTalk, Feishu), e-mail and SMS through Apprise.

Each worker's channel holds an Apprise URL: wecombot://KEY, dingtalk://TOKEN,
feishu://TOKEN, mailto://user:pass@host?to=..., and for SMS alerts.sms_url with {phone}.

Apprise reports only success or failure, never the service's status code, so a failed
notify() is transient: the dispatcher retries it and its alerts.max_attempts bounds how
often (a revoked robot token fails that many times, then the page is 'failed'). Only what
is certain before sending is permanent: a URL Apprise cannot parse, or a malformed phone
number. The failure text comes from the call's own result logs (AppriseResult.logs()),
which, unlike the process-wide apprise.LogCapture, never mix in another thread's send.

Apprise is used as a library only: it loads no plugin directories unless an asset names
some (ours names none), no configuration files (that is AppriseConfig, not used here) and
no APPRISE_* environment variables (those belong to its CLI). Each send builds its own
Apprise object, so concurrent sends share nothing mutable but the read-only asset.
"""

from __future__ import annotations

import re
from urllib.parse import quote

import apprise

from alerts.channels.base import ChannelError, Outbound, text_of


def _asset(timeout_s: float) -> apprise.AppriseAsset:
    return apprise.AppriseAsset(
        plugin_paths=[],  # built-in plugins only, never code from a user's directory
        storage_mode="memory",  # nothing written under the service's home directory
        service_timeout=timeout_s,  # one service's whole budget, its retries included
        http_redirects=False,  # as for webhooks: a redirect means a wrong URL
    )


class AppriseChannel:
    def __init__(self, name: str, *, timeout_s: float) -> None:
        self.name = name
        self._timeout_s = timeout_s
        self._asset = _asset(timeout_s)

    def url_for(self, target: str) -> str:
        return target

    def accepts(self, target: str) -> bool:
        """Whether a target is usable, without sending anything (for checking a worker's
        channels when they are registered)."""
        try:
            self._notifier(target)
        except ChannelError:
            return False
        return True

    def _notifier(self, target: str) -> tuple[apprise.Apprise, str]:
        url = self.url_for(target)
        notifier = apprise.Apprise(asset=self._asset)
        if not notifier.add(url):
            raise ChannelError(f"{self.name}: Apprise cannot use the URL {_redacted(url)}",
                               permanent=True)
        return notifier, url

    def send(self, page: Outbound) -> None:
        title, body = text_of(page)
        notifier, url = self._notifier(page.target)
        with notifier.notify(
            body=body,
            title=title,
            notify_type=apprise.NotifyType.WARNING,
            body_format=apprise.NotifyFormat.TEXT,
            timeout=self._timeout_s,
        ) as result:
            if result:
                return
            why = "; ".join(e.message for e in result.logs()) or result.status.name
        raise ChannelError(f"{self.name} via {_redacted(url)}: {why}", permanent=False)

    def close(self) -> None:
        pass  # nothing held between sends


# An SMS target is a phone number, never URL text: it is pasted into the operator's URL.
_PHONE = re.compile(r"\+?[0-9]{5,20}")


class SmsChannel(AppriseChannel):
    """SMS through the provider URL in alerts.sms_url, with {phone} replaced by the
    target number, e.g. "twilio://SID:TOKEN@+86100.../{phone}"."""

    def __init__(self, name: str, *, url_template: str, timeout_s: float) -> None:
        super().__init__(name, timeout_s=timeout_s)
        self._template = url_template

    def url_for(self, target: str) -> str:
        phone = re.sub(r"[\s\-()]", "", target)
        if not _PHONE.fullmatch(phone):
            raise ChannelError(f"{self.name}: {target!r} is not a phone number",
                               permanent=True)
        return self._template.replace("{phone}", quote(phone, safe="+"))


def _redacted(url: str) -> str:
    # Tokens live everywhere in these URLs (robot keys, passwords): name the scheme only.
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://…" if sep else "(not a URL)"
