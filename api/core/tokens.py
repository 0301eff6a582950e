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

A new token and its hash: `python -m api.tokens new`; or let `citysense tokens new|list|revoke`
edit the file. JSON with the same shape works too. A running API reads the file again when it
changes (`TokenBook`), so a revoked token is refused within seconds, without a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
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

logger = logging.getLogger(__name__)


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


class TokenEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    scope: Literal["city", "department", "open_data"]
    profiles: tuple[str, ...] | None = None
    districts: tuple[str, ...] | None = None
    acknowledge: bool = False

    @model_validator(mode="after")
    def _shape(self) -> TokenEntry:
        if self.scope == "department":
            if not self.profiles:
                raise ValueError("a department token lists the profiles it may read")
        elif self.profiles is not None or self.districts is not None:
            raise ValueError(f"a {self.scope} token takes no profiles or districts")
        if self.scope != "department" and self.acknowledge:
            raise ValueError("only a department token may acknowledge alarms")
        return self


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: list[TokenEntry]


def load_tokens(
    path: Path, profiles: Mapping[str, object], districts: tuple[str, ...]
) -> dict[str, Principal]:
    """Principals by token hash; raises ConfigError naming the file and every problem. Profiles
    and districts must exist: a typo would otherwise silently narrow (or empty) a scope."""
    try:
        parsed = read_tokens_file(path)
    except ValidationError as exc:  # first: it is a ValueError too
        # Messages only, never the input: the input holds the hashes.
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_input=False)
        )
        raise ConfigError(f"tokens file {path}: {problems}") from exc
    except (OSError, ValueError, RecursionError, yaml.YAMLError) as exc:
        # ValueError: another encoding (UnicodeDecodeError), broken JSON, or what PyYAML raises
        # for a bad date or tag; RecursionError: nesting too deep. Untranslated, any of them
        # would end the task that reads the file again (watch) instead of saying it is broken.
        raise ConfigError(f"tokens file {path}: {exc}") from exc
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


def read_tokens_file(path: Path) -> TokensFile:
    """The file as written, unchecked against the contract (load_tokens checks it)."""
    text = path.read_text(encoding="utf-8")
    raw = orjson.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    return TokensFile.model_validate(raw)


class TokenBook:
    """The principals of a tokens file, read again whenever the file changes. A file that no
    longer loads keeps the last good principals (and says why): a typo while editing must not
    lock everybody out, nor open anything."""

    def __init__(
        self, path: Path, profiles: Mapping[str, object], districts: tuple[str, ...]
    ) -> None:
        self.path = path
        self._profiles = profiles
        self._districts = districts
        self._seen = self._signature()
        self._principals = load_tokens(path, profiles, districts)
        # The file changed since the tokens in use and does not load: a revocation saved with a
        # typo leaves the token valid, so this is a gauge and an alert, not only a log line.
        self.broken = False

    def get(self, token_hash: str) -> Principal | None:
        return self._principals.get(token_hash)

    def __len__(self) -> int:
        return len(self._principals)

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size, stat.st_ino)

    def reload_if_changed(self) -> bool:
        """True if the file changed and was loaded; ConfigError if it changed and is broken."""
        seen = self._signature()
        if seen == self._seen:
            return False
        self._seen = seen
        try:
            self._principals = load_tokens(self.path, self._profiles, self._districts)
        except ConfigError:
            self.broken = True
            raise
        self.broken = False
        return True


async def watch(book: TokenBook, every: float) -> None:
    """Read the tokens file again whenever it changes."""
    while True:
        await asyncio.sleep(every)
        try:
            if book.reload_if_changed():
                logger.info("tokens file %s read again: %d tokens", book.path, len(book))
        except ConfigError as exc:
            logger.error("tokens file changed but does not load; keeping the last good: %s", exc)


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
