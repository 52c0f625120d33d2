"""`bentoml serve <bento>` as a child process on a free local port (the simulation and the e2e tests use it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class BentoServer:
    """Started and ready on construction (``/readyz``); ``stop()`` ends it. Its output goes to ``log_path``."""

    def __init__(self, tag: str, port: int | None = None, timeout: float = 300, **env: str) -> None:
        import requests

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="bentoml-serve-", suffix=".log")[1])
        bentoml_cli = Path(sys.executable).with_name("bentoml")
        # LOOPLINE_BENTO_MODEL is for serving service.py from the repo; a Bento pins its own model.
        full_env = {k: v for k, v in os.environ.items() if k != "LOOPLINE_BENTO_MODEL"} | env
        with self.log_path.open("wb") as log:  # a file, not a pipe: a chatty server never blocks on it
            self.process = subprocess.Popen(
                [str(bentoml_cli), "serve", tag, "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=full_env,
                cwd="/",
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except requests.RequestException:  # not listening or not answering yet
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"bentoml serve {tag} exited:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(1)
        self.stop()
        raise TimeoutError(f"bentoml serve {tag} not ready within {timeout:.0f} s")

    def predict(self, rows: list[dict], chunk: int = 200) -> list[dict]:
        """Score rows in requests of ``chunk``; any non-200 answer raises."""
        import requests

        from loopline.serving.request_body import ROWS_KEY

        answers: list[dict] = []
        for start in range(0, len(rows), chunk):
            body = {ROWS_KEY: rows[start : start + chunk]}
            response = requests.post(f"{self.url}/predict", json=body, timeout=60)
            response.raise_for_status()
            answers.extend(response.json())
        return answers

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
