"""What the deploy tests share: the repo's stack files, read the way `docker compose` reads them.

No Docker here: the compose file is parsed with PyYAML (anchors and ``<<`` merge keys resolved, as
Compose does) and its ``${VAR}`` expressions are interpolated by a small implementation of the
Compose Specification's interpolation rules, against a ``.env`` parsed with Compose's dotenv rules.
"""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DEPLOY = ROOT / "deploy"
# The Compose Specification JSON schema as shipped in docker-compose 1.29.2's wheel (compose/config/compose_spec.json),
# installed from PyPI by the Makefile into .venv/share (pinned, not vendored).
SCHEMA_FILE = ROOT / ".venv" / "share" / "compose-spec" / "compose" / "config" / "compose_spec.json"

# $$ (a literal $), ${NAME}, ${NAME<op>arg} with op in :- - :? ? :+ +, or $NAME
_VAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                  r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))")  # fmt: skip


class MissingVariable(ValueError):
    """A ``${NAME:?message}`` or ``${NAME?message}`` whose variable is unset (or empty, for ``:?``)."""


@cache
def compose_text() -> str:
    return COMPOSE_FILE.read_text()


@cache
def _parsed() -> dict[str, Any]:
    return yaml.safe_load(compose_text())


def compose() -> dict[str, Any]:
    """The compose file as Compose sees it before interpolation (a fresh copy each call)."""
    return copy.deepcopy(_parsed())


def services(doc: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    return (doc or compose())["services"]


def variables_used(text: str) -> dict[str, list[tuple[str | None, str | None]]]:
    """Every interpolated variable of a compose text: name -> [(operator, argument), ...]."""
    found: dict[str, list[tuple[str | None, str | None]]] = {}
    for match in _VAR.finditer(text):
        name = match["braced"] or match["named"]
        if name:
            found.setdefault(name, []).append((match["op"], match["arg"]))
    return found


def interpolate_text(value: str, env: dict[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        unset_or_empty = not current
        if op in (":-", "-"):
            return arg if (unset_or_empty if op == ":-" else current is None) else current
        if op in (":?", "?"):
            if unset_or_empty if op == ":?" else current is None:
                raise MissingVariable(f"{name}: {arg or 'required'}")
            return current
        if op in (":+", "+"):
            return "" if (unset_or_empty if op == ":+" else current is None) else arg
        return current or ""

    return _VAR.sub(replace, value)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Interpolate every string value (not keys), as Compose does after loading the YAML."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if isinstance(node, str):
        return interpolate_text(node, env)
    return node


def parse_dotenv(text: str) -> dict[str, str]:
    """Compose's .env format: KEY=VALUE, `#` comment lines, inline ` #` comments on unquoted values."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if value[:1] in ("'", '"') and value[0] in value[1:]:
            value = value[1 : value.index(value[0], 1)]
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        env[key.strip()] = value
    return env


def documented_variables() -> set[str]:
    """Names .env.example documents, as an assignment or as a commented example (`# NAME=`)."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def command_text(service: dict[str, Any]) -> str:
    command = service.get("command") or ""
    return " ".join(command) if isinstance(command, list) else command


def healthcheck_test(service: dict[str, Any]) -> list[str] | str | None:
    check = service.get("healthcheck") or {}
    if check.get("disable"):
        return None
    test = check.get("test")
    if test in (None, [], "", ["NONE"]):
        return None
    return test


def example_env() -> dict[str, str]:
    """.env.example with a stand-in for every empty secret (what deploy/init-env.sh fills)."""
    env = parse_dotenv(ENV_EXAMPLE.read_text())
    filled = {key: value or f"example-{key.lower().replace('_', '-')}" for key, value in env.items()}
    if not env.get("LOOPLINE_API_KEYS"):  # init-env.sh writes the hash of a key, in this form
        filled["LOOPLINE_API_KEYS"] = "default:sha256:" + "0" * 64
    return filled
