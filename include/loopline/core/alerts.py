"""Alert payloads and delivery, independent of Airflow (the notifier wraps this).

Chat webhooks differ only in the JSON they expect; the kind is a setting, so
switching Slack for Feishu or DingTalk is configuration, not code.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from typing import Any

log = logging.getLogger(__name__)

WEBHOOK_KINDS = ("slack", "feishu", "dingtalk", "generic")


def webhook_payload(kind: str, title: str, body: str) -> dict[str, Any]:
    text = f"{title}\n{body}".strip()
    if kind == "slack":
        return {"text": text}
    if kind == "feishu":
        return {"msg_type": "text", "content": {"text": text}}
    if kind == "dingtalk":
        return {"msgtype": "text", "text": {"content": text}}
    if kind == "generic":
        return {"title": title, "body": body}
    raise ValueError(f"unknown webhook kind {kind!r}; expected one of {WEBHOOK_KINDS}")


def post_webhook(url: str, payload: dict[str, Any], timeout: float = 10.0) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (URL is operator config)
        return response.status
