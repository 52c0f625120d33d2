"""Airflow notifier used by every Loopline DAG, for task failures and pipeline events."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from airflow.sdk import BaseNotifier
from airflow.sdk.exceptions import AirflowFailException

from loopline.core.alerts import post_webhook, webhook_payload
from loopline.core.errors import LooplineError, RetryableError
from loopline.core.settings import get_settings


class LooplineNotifier(BaseNotifier):
    """Logs the alert, posts it to the chat webhook and e-mails it, where those are configured.

    Configured by LOOPLINE_NOTIFY_WEBHOOK_URL / LOOPLINE_NOTIFY_WEBHOOK_KIND and
    LOOPLINE_NOTIFY_EMAIL_TO (sent through the Airflow SMTP connection
    LOOPLINE_SMTP_CONN_ID); read when an alert is sent, never at DAG parse time.
    """

    template_fields: Sequence[str] = ("title", "body")

    def __init__(self, title: str, body: str = "") -> None:
        super().__init__()
        self.title = title
        self.body = body
        self._templates = (title, body)

    def render_template_fields(self, context, jinja_env=None) -> None:
        """Render from the templates every time: one instance is shared by all tasks of a DAG
        (default_args), and Airflow renders in place, so without this the second failing task
        in a process would send the first one's alert."""
        self.title, self.body = self._templates
        super().render_template_fields(context, jinja_env)

    def notify(self, context) -> None:
        """Every configured channel is tried; one failing (a dead webhook) never stops the others."""
        import html

        self.log.warning("ALERT %s\n%s", self.title, self.body)
        settings = get_settings()
        failures: list[Exception] = []
        if settings.notify_webhook_url:
            try:
                payload = webhook_payload(settings.notify_webhook_kind, self.title, self.body)
                post_webhook(settings.notify_webhook_url, payload)
            except Exception as err:
                self.log.exception("chat webhook alert failed")
                failures.append(err)
        if settings.notify_email_to:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier

            try:
                SmtpNotifier(
                    to=settings.notify_email_to,
                    subject=self.title,
                    html_content=f"<pre>{html.escape(self.body)}</pre>",
                    smtp_conn_id=settings.smtp_conn_id,
                ).notify(context)
            except Exception as err:
                self.log.exception("e-mail alert failed")
                failures.append(err)
        if failures:
            raise failures[0]


def task_failure_notifier() -> LooplineNotifier:
    """Shared on_failure_callback: names the DAG, task and run, links to the log."""
    return LooplineNotifier(
        title="Loopline: {{ ti.dag_id }}.{{ ti.task_id }} failed",
        body="run {{ run_id }}, try {{ ti.try_number }}\n{{ exception | default('') }}\nlog: {{ ti.log_url }}",
    )


@contextmanager
def fail_fast() -> Iterator[None]:
    """Loopline's own errors are permanent (bad params, missing data version, invalid data): fail now, no retries.

    Superseded by ``dag_defaults.PERMANENT_ERRORS``, the retry policy every task gets from
    ``default_args`` (one mechanism, no task can forget it); kept, with the same rule, for task
    code that still wraps its body in it (the ingest DAG).
    """
    try:
        yield
    except RetryableError:
        raise
    except LooplineError as err:
        raise AirflowFailException(f"{type(err).__name__}: {err}") from err
