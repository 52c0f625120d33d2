"""What the container tests share: a free port on 127.0.0.1, a container's logs, and waiting until it serves."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest
import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def logs(engine: str, name: str) -> str:
    return subprocess.run([engine, "logs", name], capture_output=True, text=True).stdout[-6000:]


def wait_until_serving(engine: str, name: str, url: str) -> None:
    """Until ``url``/readyz answers 200 or the container has stopped (a failure with its logs); no timing threshold."""
    while True:
        state = subprocess.run([engine, "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True)
        if state.stdout.strip() != "true":
            pytest.fail(f"container {name} stopped before serving:\n{logs(engine, name)}")
        try:
            if requests.get(f"{url}/readyz", timeout=30).status_code == 200:
                return
        except requests.RequestException:  # not listening yet, or busy starting: ask again
            pass
        time.sleep(2)
