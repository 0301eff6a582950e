"""`citysense tokens new|list|revoke`: the API's tokens file, edited in place.

The file holds only SHA-256 hashes; a new token is printed once, here, and never stored. Writes
go to a temporary file renamed over the old one, so a running API, which reads the file again
when it changes, never sees half of it. The new file keeps the old one's owner and mode (the
compose stack's is readable by the API's container user); a file made here is its owner's only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from api.core.settings import ApiSettings
from api.core.tokens import TokenEntry, TokensFile, hash_token, new_token, read_tokens_file
from common.errors import ConfigError
from common.files import mode_kept, replace_whole


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["new", "list", "revoke"])
    parser.add_argument("--file", type=Path, help="tokens file (default CITYSENSE_API_TOKENS)")
    parser.add_argument("--name", help="new/revoke: the token's name, shown in logs")
    parser.add_argument(
        "--scope", choices=["city", "department", "open_data"], help="new: what it may read"
    )
    parser.add_argument("--profiles", nargs="+", help="new, department: profiles it may read")
    parser.add_argument("--districts", nargs="+", help="new, department: only these districts")
    parser.add_argument(
        "--acknowledge", action="store_true", help="new, department: may acknowledge alarms"
    )


def main(args: argparse.Namespace) -> int:
    path = args.file or ApiSettings().api_tokens
    if path is None:
        raise ConfigError("no tokens file: pass --file or set CITYSENSE_API_TOKENS")
    current = read_tokens_file(path) if path.exists() else TokensFile(tokens=[])
    if args.action == "list":
        for entry in current.tokens:
            print(_describe(entry))
        return 0
    if not args.name:
        raise ConfigError(f"tokens {args.action} needs --name")
    if args.action == "revoke":
        kept = [e for e in current.tokens if e.name != args.name]
        if len(kept) == len(current.tokens):
            raise ConfigError(f"no token named {args.name!r} in {path}")
        _write(path, TokensFile(tokens=kept))
        print(f"revoked {args.name!r}: a running API refuses it within seconds")
        return 0
    return _new(path, current, args)


def _new(path: Path, current: TokensFile, args: argparse.Namespace) -> int:
    if any(e.name == args.name for e in current.tokens):
        raise ConfigError(f"a token named {args.name!r} exists; revoke it first")
    if not args.scope:
        raise ConfigError("tokens new needs --scope")
    token = new_token()
    try:
        entry = TokenEntry(
            name=args.name,
            sha256=hash_token(token),
            scope=args.scope,
            profiles=tuple(args.profiles) if args.profiles else None,
            districts=tuple(args.districts) if args.districts else None,
            acknowledge=args.acknowledge,
        )
    except ValueError as exc:
        raise ConfigError(f"token {args.name!r}: {exc}") from None
    _write(path, TokensFile(tokens=[*current.tokens, entry]))
    print(f"{_describe(entry)}\ntoken: {token}\n(shown once: the file keeps only its hash)")
    return 0


def _describe(entry: TokenEntry) -> str:
    parts = [entry.name, entry.scope]
    if entry.profiles:
        parts.append("profiles=" + ",".join(entry.profiles))
    if entry.districts:
        parts.append("districts=" + ",".join(entry.districts))
    if entry.acknowledge:
        parts.append("acknowledge")
    return "\t".join(parts)


def _write(path: Path, content: TokensFile) -> None:
    data = {
        "tokens": [
            {
                **e.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
                "scope": e.scope,
            }
            for e in content.tokens
        ]
    }
    mode = mode_kept(path, 0o600)
    replace_whole(path, yaml.safe_dump(data, sort_keys=False).encode(), mode=mode, keep_owner=True)
