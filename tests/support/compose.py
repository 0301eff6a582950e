"""docker-compose.yml's services run as local processes: each service's own command and
environment, with only what a container engine would provide replaced — where its volumes and
secrets live on this machine, and the loopback addresses and free ports its peers have here."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"


def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return document


@dataclass(frozen=True)
class Service:
    name: str
    command: list[str]
    environment: dict[str, str]
    spec: dict[str, Any]

    def argv(self) -> list[str]:
        """The command, with `citysense` run from this checkout's interpreter."""
        head, *rest = self.command
        if head == "citysense":
            return [sys.executable, "-m", "citysense.cli", *rest]
        return self.command

    def local_env(self, paths: dict[str, Path], **overrides: str) -> dict[str, str]:
        """Its environment with the container's paths (a prefix each) at their place here."""
        env = {}
        for key, value in self.environment.items():
            local = value
            for inside, here in paths.items():
                if local.startswith(inside):
                    local = str(here) + local[len(inside) :]
            env[key] = local
        return {**env, **overrides}

    def secret_targets(self) -> dict[str, str]:
        """source secret → the file name the service sees under /run/secrets."""
        found = {}
        for item in self.spec.get("secrets", []):
            if isinstance(item, str):
                found[item] = item
            else:
                found[item["source"]] = item.get("target", item["source"])
        return found


def service(name: str) -> Service:
    spec = compose()["services"][name]
    env = {k: str(v) for k, v in (spec.get("environment") or {}).items()}
    return Service(name, list(spec["command"]), env, spec)


def mount_secrets(svc: Service, generated: Path, into: Path, rewrite: dict[str, str]) -> Path:
    """The service's /run/secrets as a folder: each secret it names, under its target name,
    with the stack's host names replaced by `rewrite` (e.g. `mosquitto:1883` → a local port)."""
    files = {n: s["file"] for n, s in compose()["secrets"].items()}
    into.mkdir(parents=True, exist_ok=True)
    for source, target in svc.secret_targets().items():
        text = (generated / Path(files[source]).name).read_text()
        for old, new in rewrite.items():
            text = text.replace(old, new)
        (into / target).write_text(text)
    return into
