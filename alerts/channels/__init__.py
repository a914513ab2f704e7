"""Notification channels other than the MQTT push: signed webhooks (webhook.py), Apprise
for chat robots, e-mail and SMS (chat.py), voice calls (voice.py). See base.py for the
contract."""

from __future__ import annotations

from alerts.channels.base import Channel, ChannelError, Outbound
from alerts.channels.chat import AppriseChannel, SmsChannel
from alerts.channels.voice import AliyunVoiceChannel
from alerts.channels.webhook import WebhookChannel, verify_signature
from runtime.settings import AlertsSettings

__all__ = [
    "AliyunVoiceChannel", "AppriseChannel", "Channel", "ChannelError", "Outbound",
    "SmsChannel", "WebhookChannel",
    "build_channels", "verify_signature",
]

CHAT_CHANNELS = ("wecom", "dingtalk", "feishu", "email")


def build_channels(settings: AlertsSettings) -> dict[str, Channel]:
    """Every channel the settings allow, by name. No I/O: a missing webhook secret shows
    as a permanent error on the first webhook page, not as a core that will not start."""
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    timeout = settings.http_timeout_s
    channels: dict[str, Channel] = {
        "webhook": WebhookChannel("webhook", secret=secret, timeout_s=timeout),
    }
    if settings.fire_service_url:
        channels["fire_service"] = WebhookChannel(
            "fire_service", secret=secret, timeout_s=timeout, url=settings.fire_service_url)
    if settings.sms_url:
        channels["sms"] = SmsChannel("sms", url_template=settings.sms_url, timeout_s=timeout)
    for name in CHAT_CHANNELS:
        channels[name] = AppriseChannel(name, timeout_s=timeout)
    if settings.voice_url:
        channels["voice"] = AliyunVoiceChannel(
            "voice", url=settings.voice_url, key_id=settings.voice_access_key_id or "",
            secret=(settings.voice_access_key_secret.get_secret_value()
                    if settings.voice_access_key_secret else ""),
            show_number=settings.voice_show_number or "",
            tts_code=settings.voice_tts_code or "", timeout_s=timeout)
    return channels
