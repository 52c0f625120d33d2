"""Webhook payloads per chat kind, and delivery to a real HTTP receiver on localhost."""

from __future__ import annotations

import json
import threading
import urllib.error
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from loopline.core.alerts import WEBHOOK_KINDS, post_webhook, webhook_payload

# --- payloads -----------------------------------------------------------------------------------


def test_slack_payload():
    assert webhook_payload("slack", "Train failed", "task train_and_evaluate") == {
        "text": "Train failed\ntask train_and_evaluate"
    }


def test_feishu_payload():
    assert webhook_payload("feishu", "T", "B") == {"msg_type": "text", "content": {"text": "T\nB"}}


def test_dingtalk_payload():
    assert webhook_payload("dingtalk", "T", "B") == {"msgtype": "text", "text": {"content": "T\nB"}}


def test_generic_payload_keeps_title_and_body_apart():
    assert webhook_payload("generic", "T", "B") == {"title": "T", "body": "B"}
    assert webhook_payload("generic", "T", "") == {"title": "T", "body": ""}


def test_chat_text_has_no_dangling_newline_without_a_body():
    assert webhook_payload("slack", "Only a title", "") == {"text": "Only a title"}
    assert webhook_payload("feishu", "Only a title", "")["content"] == {"text": "Only a title"}
    assert webhook_payload("dingtalk", "Only a title", "")["text"] == {"content": "Only a title"}


@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
def test_every_kind_has_a_json_payload(kind):
    payload = webhook_payload(kind, "模型训练失败", "数据版本 v0003")
    assert json.loads(json.dumps(payload)) == payload
    assert "模型训练失败" in json.dumps(payload, ensure_ascii=False)


def test_the_kinds():
    assert set(WEBHOOK_KINDS) == {"slack", "feishu", "dingtalk", "generic"}


@pytest.mark.parametrize("kind", ["pigeon", "Slack", ""])
def test_an_unknown_kind_is_a_value_error(kind):
    with pytest.raises(ValueError, match=f"unknown webhook kind {kind!r}"):
        webhook_payload(kind, "T", "B")


# --- delivery -----------------------------------------------------------------------------------


class Receiver:
    """A real HTTP server on 127.0.0.1 (port picked by the OS) recording what it receives."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(
                    {"path": self.path, "content_type": self.headers["Content-Type"], "json": json.loads(body)}
                )
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def test_post_webhook_delivers_json_to_a_local_receiver(receiver):
    payload = webhook_payload("feishu", "Gate rejected credit_risk v7", "auc 0.61 < 0.70")
    status = post_webhook(receiver.url, payload)
    assert status == 200
    assert receiver.requests == [{"path": "/hook", "content_type": "application/json", "json": payload}]


def test_post_webhook_keeps_unicode(receiver):
    post_webhook(receiver.url, {"text": "质量门拒绝 ✗"})
    assert receiver.requests[0]["json"] == {"text": "质量门拒绝 ✗"}


def test_each_call_is_one_request(receiver):
    for kind in WEBHOOK_KINDS:
        post_webhook(receiver.url, webhook_payload(kind, "T", "B"))
    assert [r["json"] for r in receiver.requests] == [webhook_payload(k, "T", "B") for k in WEBHOOK_KINDS]


def test_a_failing_receiver_raises():
    rec = Receiver(status=500)
    rec.thread.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            post_webhook(rec.url, {"text": "x"})
        assert err.value.code == 500
    finally:
        rec.server.shutdown()
        rec.server.server_close()
    assert len(rec.requests) == 1


def test_an_unreachable_receiver_raises():
    server = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_port
    server.server_close()  # the port is now closed: connection refused
    with pytest.raises(urllib.error.URLError):
        post_webhook(f"http://127.0.0.1:{port}/hook", {"text": "x"}, timeout=2)


def test_a_shared_notifier_renders_each_alert_from_its_templates(monkeypatch):
    from loopline.core.notifiers import LooplineNotifier

    monkeypatch.delenv("LOOPLINE_NOTIFY_WEBHOOK_URL", raising=False)
    monkeypatch.delenv("LOOPLINE_NOTIFY_EMAIL_TO", raising=False)
    notifier = LooplineNotifier(title="{{ task_id }} failed", body="{{ reason }}")
    notifier({"task_id": "canary_5pct", "reason": "gate"})
    assert notifier.title == "canary_5pct failed"
    notifier({"task_id": "put_champion_back", "reason": "restored"})
    assert (notifier.title, notifier.body) == ("put_champion_back failed", "restored")
