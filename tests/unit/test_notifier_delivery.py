"""LooplineNotifier delivering for real: e-mail through Airflow's SMTP provider to a local SMTP sink, and
chat webhooks of every kind to a local HTTP receiver. Nothing leaves the machine.

The SMTP connection is an Airflow connection given the usual way, as ``AIRFLOW_CONN_SMTP_DEFAULT``
(JSON); the notifier is called as Airflow calls a callback: ``notifier(context)``, which renders
its templates against the context first.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import re
import socketserver
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from types import SimpleNamespace

import pytest

from loopline.core.alerts import WEBHOOK_KINDS
from loopline.core.notifiers import LooplineNotifier, task_failure_notifier
from loopline.core.settings import get_settings

# --- a local SMTP sink (aiosmtpd is not installed; smtplib needs only this much of RFC 5321) ---------


@dataclass
class Mail:
    mail_from: str
    rcpt_to: list[str]
    data: bytes
    auth: str | None

    @property
    def message(self) -> email.message.EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)


@dataclass
class SmtpSink:
    server: socketserver.ThreadingTCPServer
    mails: list[Mail] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.server.server_address[1]


def _address(command: str) -> str:
    """The address of 'MAIL FROM:<a@b> SIZE=1' or 'RCPT TO:<a@b>'."""
    return re.search(r"<([^>]*)>", command).group(1)


class _SmtpHandler(socketserver.StreamRequestHandler):
    def reply(self, line: str) -> None:
        self.wfile.write(f"{line}\r\n".encode())

    def handle(self) -> None:
        sink: SmtpSink = self.server.sink
        mail_from, rcpt_to, auth = "", [], None
        self.reply("220 loopline-test-sink ESMTP")
        while line := self.rfile.readline():
            command = line.decode().rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self.reply("250-loopline-test-sink")
                self.reply("250-AUTH PLAIN")
                self.reply("250 8BITMIME")
            elif verb == "HELO":
                self.reply("250 loopline-test-sink")
            elif verb == "AUTH":  # AUTH PLAIN <base64(\0user\0password)>
                _, user, password = base64.b64decode(command.split()[2]).decode().split("\0")
                auth = f"{user}:{password}"
                self.reply("235 2.7.0 Authentication successful")
            elif verb == "MAIL":
                mail_from, rcpt_to = _address(command), []
                self.reply("250 OK")
            elif verb == "RCPT":
                rcpt_to.append(_address(command))
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 End data with <CR><LF>.<CR><LF>")
                lines = []
                while (data_line := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(data_line[1:] if data_line.startswith(b"..") else data_line)  # dot-unstuffing
                sink.mails.append(Mail(mail_from, rcpt_to, b"".join(lines), auth))
                self.reply("250 OK: queued")
            elif verb in ("RSET", "NOOP"):
                self.reply("250 OK")
            elif verb == "QUIT":
                self.reply("221 Bye")
                return
            else:
                self.reply("502 Command not implemented")


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SmtpHandler)
    server.daemon_threads = True
    sink = SmtpSink(server)
    server.sink = sink
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield sink
    server.shutdown()
    server.server_close()


# --- a local webhook receiver ---------------------------------------------------------------------


class _HookHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append(
            {"path": self.path, "content_type": self.headers["Content-Type"], "payload": json.loads(body)}
        )
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"ok": true}')

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver() -> Iterator[HTTPServer]:
    server = HTTPServer(("127.0.0.1", 0), _HookHandler)
    server.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


# --- context and settings -------------------------------------------------------------------------


def failure_context() -> dict:
    """What the templates of the shared failure notifier read (Airflow passes the full task context)."""
    ti = SimpleNamespace(
        dag_id="credit_risk_train",
        task_id="train_and_evaluate",
        try_number=3,
        log_url="http://localhost:8080/dags/credit_risk_train/runs/manual__1/tasks/train_and_evaluate?try_number=3",
    )
    return {"ti": ti, "run_id": "manual__1", "exception": ValueError("holdout AUC 0.52 below the floor 0.70")}


@pytest.fixture
def configure(monkeypatch):
    """Set Loopline's notify settings (and nothing else) for this test; settings are re-read."""
    for key in ("LOOPLINE_NOTIFY_WEBHOOK_URL", "LOOPLINE_NOTIFY_WEBHOOK_KIND", "LOOPLINE_NOTIFY_EMAIL_TO"):
        monkeypatch.delenv(key, raising=False)

    def apply(**env: str) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    yield apply
    get_settings.cache_clear()


def smtp_connection(port: int, **extra) -> str:
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "login": "alerts",
            "password": "s3cret",
            "extra": {
                "from_email": "loopline@example.com",
                "disable_ssl": True,
                "disable_tls": True,
                "timeout": 5,
                "retry_limit": 0,
                **extra,
            },
        }
    )


# --- e-mail ---------------------------------------------------------------------------------------


def test_failure_email_through_the_airflow_smtp_connection(smtp_sink, configure, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_connection(smtp_sink.port))
    configure(LOOPLINE_NOTIFY_EMAIL_TO="ml-team@example.com, oncall@example.com")

    task_failure_notifier()(failure_context())

    (mail,) = smtp_sink.mails
    assert mail.auth == "alerts:s3cret"  # the connection's login, over AUTH PLAIN
    assert mail.mail_from == "loopline@example.com"
    assert mail.rcpt_to == ["ml-team@example.com", "oncall@example.com"]
    message = mail.message
    assert message["Subject"] == "Loopline: credit_risk_train.train_and_evaluate failed"
    assert message["From"] == "loopline@example.com"
    assert message["To"] == "ml-team@example.com, oncall@example.com"
    html_part = next(part for part in message.walk() if part.get_content_type() == "text/html")
    body = html_part.get_content()
    assert body.startswith("<pre>run manual__1, try 3\n") and body.endswith("</pre>")
    assert "holdout AUC 0.52 below the floor 0.70" in body
    assert "log: http://localhost:8080/dags/credit_risk_train/runs/manual__1/tasks/train_and_evaluate" in body


def test_the_smtp_connection_id_is_a_setting(smtp_sink, configure, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LOOPLINE_SMTP", smtp_connection(smtp_sink.port))
    configure(LOOPLINE_NOTIFY_EMAIL_TO="ml-team@example.com", LOOPLINE_SMTP_CONN_ID="loopline_smtp")

    LooplineNotifier(title="Loopline: credit_risk v7 promoted", body="run {{ run_id }}")({"run_id": "r7"})

    (mail,) = smtp_sink.mails
    assert mail.message["Subject"] == "Loopline: credit_risk v7 promoted"
    assert "<pre>run r7</pre>" in mail.message.get_body(("html",)).get_content()


def test_no_email_address_means_no_email(smtp_sink, configure, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_connection(smtp_sink.port))
    configure()
    LooplineNotifier(title="t", body="b")({})
    assert smtp_sink.mails == []


def test_a_connection_without_a_sender_fails_loudly(smtp_sink, configure, monkeypatch):
    conn = json.loads(smtp_connection(smtp_sink.port))
    del conn["extra"]["from_email"]
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", json.dumps(conn))
    configure(LOOPLINE_NOTIFY_EMAIL_TO="ml-team@example.com")
    with pytest.raises(ValueError, match="from_email"):
        LooplineNotifier(title="t", body="b")({})
    assert smtp_sink.mails == []


# --- webhooks -------------------------------------------------------------------------------------

TITLE = "Loopline: credit_risk_train.train_and_evaluate failed"
EXPECTED = {
    "slack": lambda text, body: {"text": text},
    "feishu": lambda text, body: {"msg_type": "text", "content": {"text": text}},
    "dingtalk": lambda text, body: {"msgtype": "text", "text": {"content": text}},
    "generic": lambda text, body: {"title": TITLE, "body": body},
}


def test_every_kind_is_covered():
    assert set(EXPECTED) == set(WEBHOOK_KINDS)


@pytest.mark.parametrize("kind", WEBHOOK_KINDS)
def test_failure_webhook_payload_per_kind(kind, receiver, configure):
    configure(
        LOOPLINE_NOTIFY_WEBHOOK_URL=f"http://127.0.0.1:{receiver.server_port}/hook/{kind}?token=t0k",
        LOOPLINE_NOTIFY_WEBHOOK_KIND=kind,
    )

    task_failure_notifier()(failure_context())

    (request,) = receiver.received
    assert request["path"] == f"/hook/{kind}?token=t0k" and request["content_type"] == "application/json"
    body = (
        "run manual__1, try 3\nholdout AUC 0.52 below the floor 0.70\n"
        "log: http://localhost:8080/dags/credit_risk_train/runs/manual__1/tasks/train_and_evaluate?try_number=3"
    )
    assert request["payload"] == EXPECTED[kind](f"{TITLE}\n{body}", body)


def test_webhook_and_email_together(receiver, smtp_sink, configure, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_connection(smtp_sink.port))
    configure(
        LOOPLINE_NOTIFY_WEBHOOK_URL=f"http://127.0.0.1:{receiver.server_port}/hook",
        LOOPLINE_NOTIFY_WEBHOOK_KIND="feishu",
        LOOPLINE_NOTIFY_EMAIL_TO="ml-team@example.com",
    )
    LooplineNotifier(title="模型 v3 已上线", body="数据版本 {{ params.v }}")({"params": {"v": "v0003"}})
    assert receiver.received[0]["payload"] == {
        "msg_type": "text",
        "content": {"text": "模型 v3 已上线\n数据版本 v0003"},
    }
    assert smtp_sink.mails[0].message["Subject"] == "模型 v3 已上线"
    assert "数据版本 v0003" in smtp_sink.mails[0].message.get_body(("html",)).get_content()
