from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from loopline.alerts import WEBHOOK_KINDS, post_webhook, webhook_payload


def test_payload_shapes():
    assert webhook_payload("slack", "T", "B") == {"text": "T\nB"}
    assert webhook_payload("feishu", "T", "B") == {"msg_type": "text", "content": {"text": "T\nB"}}
    assert webhook_payload("dingtalk", "T", "B") == {"msgtype": "text", "text": {"content": "T\nB"}}
    assert webhook_payload("generic", "T", "B") == {"title": "T", "body": "B"}
    with pytest.raises(ValueError, match="unknown webhook kind"):
        webhook_payload("pigeon", "T", "B")
    assert set(WEBHOOK_KINDS) == {"slack", "feishu", "dingtalk", "generic"}


def test_post_webhook_delivers_json_to_a_local_receiver():
    received = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        status = post_webhook(f"http://127.0.0.1:{server.server_port}/hook", {"text": "hello"})
    finally:
        server.shutdown()
    assert status == 200 and received == [{"text": "hello"}]
