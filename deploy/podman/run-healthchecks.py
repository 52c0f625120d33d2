"""Service podman-healthchecks on the host-network overlay: runs every container's health check on time.

Podman schedules health checks with systemd timers; on a machine without systemd (a container or a
sandbox) nothing runs them, every check stays "starting" and `depends_on: condition: service_healthy`
waits forever. This loop does the timers' job through podman's own API (`GET .../healthcheck` is
`podman healthcheck run`): each running container with a health check is checked once per its own
interval, so start periods, retries and "unhealthy" mean what docker-compose.yaml says they mean.
Standard library only; the podman socket is mounted at $PODMAN_SOCKET.
"""

import http.client
import json
import os
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

SOCKET = os.environ.get("PODMAN_SOCKET", "/run/podman/podman.sock")
TICK_SECONDS = 1.0


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("podman", timeout=120)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def api(path: str):
    connection = UnixConnection(SOCKET)
    try:
        connection.request("GET", "/v4.0.0/libpod" + path)
        response = connection.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body else None
    finally:
        connection.close()


def interval_of(container_id: str, known: dict[str, float | None]) -> float | None:
    """A container's check interval in seconds (None: it has no check); a container's config never changes."""
    if container_id not in known:
        status, info = api(f"/containers/{container_id}/json")
        if status != 200:
            return None  # gone between the listing and now: asked again if it shows up again
        check = (info or {}).get("Config", {}).get("Healthcheck")
        has_check = bool(check and check.get("Test") and check["Test"][0] != "NONE")
        known[container_id] = max((check.get("Interval") or 30_000_000_000) / 1e9, 1.0) if has_check else None
    return known[container_id]


def running_with_healthcheck(known: dict[str, float | None]) -> dict[str, float]:
    """Container id -> its check interval in seconds, for every running container that has a check."""
    status, containers = api("/containers/json?" + urllib.parse.urlencode({"filters": '{"status":["running"]}'}))
    if status != 200:
        raise RuntimeError(f"podman API: listing containers answered {status}")
    intervals = {container["Id"]: interval_of(container["Id"], known) for container in containers or []}
    return {container_id: interval for container_id, interval in intervals.items() if interval is not None}


def main() -> None:
    last_run: dict[str, float] = {}
    in_flight: dict[str, object] = {}
    known: dict[str, float | None] = {}
    print(f"running health checks through {SOCKET}", flush=True)
    # checks run in parallel (an `airflow jobs check` takes seconds), one at a time per container
    with ThreadPoolExecutor(max_workers=16) as pool:
        while True:
            now = time.monotonic()
            try:
                for container_id, interval in running_with_healthcheck(known).items():
                    # like a timer: the first check one interval after the container is first seen
                    last = last_run.setdefault(container_id, now)
                    busy = container_id in in_flight and not in_flight[container_id].done()
                    if now - last >= interval and not busy:
                        last_run[container_id] = now
                        in_flight[container_id] = pool.submit(api, f"/containers/{container_id}/healthcheck")
            except (OSError, RuntimeError, http.client.HTTPException) as error:
                print(f"podman API not answering ({error}); retrying", flush=True)
            time.sleep(TICK_SECONDS)


if __name__ == "__main__":
    main()
