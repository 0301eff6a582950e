"""API tokens: who may read what. The operator configures them in a tokens file; only SHA-256
hashes of the tokens are stored there, so the file leaking does not leak a usable token.

    tokens:
      - name: water-department          # shown in logs and on acknowledged alarms, never the token
        sha256: 3f2a...                 # python -m api.tokens hash  (reads the token on stdin)
        scope: department               # department | city | open_data
        profiles: [water_pipe]          # department only: profiles it may read (required)
        districts: [North, South]       # department only: omitted means every district
        acknowledge: true               # may acknowledge alarms of its devices (default false)
      - {name: city-brain, sha256: 9b1c..., scope: city}          # everything, read only
      - {name: open-data-portal, sha256: 77de..., scope: open_data} # aggregates only

A new token and its hash: `python -m api.tokens new`. JSON with the same shape works too.
"""

from __future__ import annotations

import hashlib
import secrets
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Literal

import orjson
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from common.errors import ConfigError


class Scope(StrEnum):
    CITY = "city"
    DEPARTMENT = "department"
    OPEN_DATA = "open_data"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "cst_" + secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Whoever presented a valid token. `profiles`/`districts` None means all of them."""

    name: str
    scope: Scope
    profiles: frozenset[str] | None = None
    districts: frozenset[str] | None = None
    acknowledge: bool = False

    @property
    def sees_devices(self) -> bool:
        """Open data never sees a single device: no ids, no coordinates, no latest values."""
        return self.scope is not Scope.OPEN_DATA

    def sees(self, profile: str, district: str) -> bool:
        if not self.sees_devices:
            return False
        return (self.profiles is None or profile in self.profiles) and (
            self.districts is None or district in self.districts
        )

    def sees_profile(self, profile: str) -> bool:
        return self.profiles is None or profile in self.profiles

    def sees_district(self, district: str) -> bool:
        return self.districts is None or district in self.districts


# Everyone, when the operator explicitly turned authentication off (a development deployment).
ANONYMOUS = Principal(name="anonymous", scope=Scope.CITY, acknowledge=True)


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scope: Literal["city", "department", "open_data"]
    profiles: tuple[str, ...] | None = None
    districts: tuple[str, ...] | None = None
    acknowledge: bool = False

    @model_validator(mode="after")
    def _shape(self) -> _Entry:
        if self.scope == "department":
            if not self.profiles:
                raise ValueError("a department token lists the profiles it may read")
        elif self.profiles is not None or self.districts is not None:
            raise ValueError(f"a {self.scope} token takes no profiles or districts")
        if self.scope != "department" and self.acknowledge:
            raise ValueError("only a department token may acknowledge alarms")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[_Entry]


def load_tokens(
    path: Path, profiles: Mapping[str, object], districts: tuple[str, ...]
) -> dict[str, Principal]:
    """Principals by token hash; raises ConfigError naming the file and every problem. Profiles
    and districts must exist: a typo would otherwise silently narrow (or empty) a scope."""
    try:
        text = path.read_text(encoding="utf-8")
        raw = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        parsed = _File.model_validate(raw)
    except (OSError, orjson.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"tokens file {path}: {exc}") from exc
    except ValidationError as exc:
        # Messages only, never the input: the input holds the hashes.
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        raise ConfigError(f"tokens file {path}: {problems}") from exc
    out: dict[str, Principal] = {}
    problems_found: list[str] = []
    names: set[str] = set()
    for entry in parsed.tokens:
        if entry.name in names:
            problems_found.append(f"token name {entry.name!r} appears twice")
        names.add(entry.name)
        if entry.sha256 in out:
            problems_found.append(f"token {entry.name!r} has the same hash as another token")
        unknown_p = sorted(set(entry.profiles or ()) - set(profiles))
        unknown_d = sorted(set(entry.districts or ()) - set(districts))
        if unknown_p:
            problems_found.append(f"token {entry.name!r}: unknown profiles {unknown_p}")
        if unknown_d:
            problems_found.append(f"token {entry.name!r}: unknown districts {unknown_d}")
        out[entry.sha256] = Principal(
            name=entry.name,
            scope=Scope(entry.scope),
            profiles=None if entry.profiles is None else frozenset(entry.profiles),
            districts=None if entry.districts is None else frozenset(entry.districts),
            acknowledge=entry.acknowledge,
        )
    if problems_found:
        raise ConfigError(f"tokens file {path}: " + "; ".join(problems_found))
    return out


USAGE = """usage: python -m api.tokens new    print a new token and the hash for the tokens file
       python -m api.tokens hash   read a token on stdin, print its SHA-256 for the tokens file"""


def main(argv: list[str]) -> int:
    if argv == ["new"]:
        token = new_token()
        print(f"token:  {token}\nsha256: {hash_token(token)}")
        return 0
    if argv == ["hash"]:
        token = sys.stdin.readline().strip()
        if not token:
            print("no token on stdin", file=sys.stderr)
            return 2
        print(hash_token(token))
        return 0
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
