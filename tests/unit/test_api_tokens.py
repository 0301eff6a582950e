"""Tokens file parsing, hashing and the `python -m api.tokens` helper."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from api.core.tokens import Principal, Scope, TokenBook, hash_token, load_tokens, main
from common.errors import ConfigError

PROFILES = {"streetlight": None, "water_pipe": None}
DISTRICTS = ("North", "South")
H = "0" * 64


def load(tmp_path: Path, text: str) -> dict[str, Principal]:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    return load_tokens(path, PROFILES, DISTRICTS)


def test_hash_is_sha256_hex() -> None:
    assert hash_token("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_scopes_load(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        f"""tokens:
  - {{name: w, sha256: "{"1" * 64}", scope: department, profiles: [water_pipe],
     districts: [North], acknowledge: true}}
  - {{name: c, sha256: "{"2" * 64}", scope: city}}
  - {{name: o, sha256: "{"3" * 64}", scope: open_data}}
""",
    )
    water = loaded["1" * 64]
    assert water.scope is Scope.DEPARTMENT and water.acknowledge
    assert water.sees("water_pipe", "North")
    assert not water.sees("water_pipe", "South") and not water.sees("streetlight", "North")
    assert loaded["2" * 64].sees("streetlight", "South") and not loaded["2" * 64].acknowledge
    assert not loaded["3" * 64].sees_devices


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (f'tokens: [{{name: a, sha256: "{H}", scope: department}}]', "lists the profiles"),
        (f'tokens: [{{name: a, sha256: "{H}", scope: city, profiles: [x]}}]', "no profiles"),
        (f'tokens: [{{name: a, sha256: "{H}", scope: city, acknowledge: true}}]', "acknowledge"),
        ('tokens: [{name: a, sha256: "plain-token", scope: city}]', "sha256"),
        (f'tokens: [{{name: a, sha256: "{H}", scope: admin}}]', "scope"),
        (
            f'tokens: [{{name: a, sha256: "{H}", scope: department, profiles: [gas]}}]',
            "unknown profiles ['gas']",
        ),
        (
            f'tokens: [{{name: a, sha256: "{H}", scope: city}}, '
            f'{{name: b, sha256: "{H}", scope: city}}]',
            "same hash",
        ),
        ("tokens: [", "tokens file"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="tokens file") as raised:
        load(tmp_path, text)
    assert fragment in str(raised.value)
    assert "plain-token" not in str(raised.value)  # the input is never echoed


def test_cli_new_and_hash(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["new"]) == 0
    out = capsys.readouterr().out.split()
    token, digest = out[1], out[3]
    assert digest == hash_token(token) and len(token) > 40
    monkeypatch.setattr("sys.stdin", io.StringIO(token + "\n"))
    assert main(["hash"]) == 0
    assert capsys.readouterr().out.strip() == digest
    assert main([]) == 2


def test_a_changed_file_that_does_not_load_keeps_the_last_good_tokens_and_says_it_is_broken(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.yaml"
    good = f'tokens: [{{name: a, sha256: "{"1" * 64}", scope: city}}]\n'
    path.write_text(good)
    book = TokenBook(path, PROFILES, DISTRICTS)
    assert not book.broken
    path.write_text(good.replace("city", "admin") + "# a revocation saved with a typo\n")
    with pytest.raises(ConfigError, match="scope"):
        book.reload_if_changed()
    assert book.broken  # the gauge tokens_file_broken: the old token is still accepted
    assert book.get("1" * 64) is not None
    assert not book.reload_if_changed()  # unchanged since: still broken, not raised again
    assert book.broken
    path.write_text("tokens: []\n")
    assert book.reload_if_changed()
    assert not book.broken and book.get("1" * 64) is None


def test_a_tokens_file_saved_in_another_encoding_is_broken_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "tokens.yaml"
    good = f'tokens: [{{name: a, sha256: "{"1" * 64}", scope: city}}]\n'
    path.write_text(good)
    book = TokenBook(path, PROFILES, DISTRICTS)
    path.write_bytes((good + "# révoqué\n").encode("latin-1"))
    with pytest.raises(ConfigError, match="utf-8"):
        book.reload_if_changed()
    assert book.broken and book.get("1" * 64) is not None
    # PyYAML's own ValueError (a date that is none), not a YAMLError: translated too.
    path.write_text(good + "expires: 2024-13-01\n")
    with pytest.raises(ConfigError, match="month"):
        book.reload_if_changed()
    assert book.broken


def test_a_tokens_file_nested_too_deep_or_not_a_file_is_broken_not_a_crash(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tokens.yaml"
    path.write_text(f'tokens: [{{name: a, sha256: "{"1" * 64}", scope: city}}]\n')
    book = TokenBook(path, PROFILES, DISTRICTS)
    # PyYAML composes nested collections recursively: deep enough, Python's recursion limit.
    path.write_text("tokens: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ConfigError, match=r"tokens file .*recursion"):
        book.reload_if_changed()
    assert book.broken and book.get("1" * 64) is not None
    path.unlink()
    path.mkdir()  # replaced by a folder (a volume mounted at the file's path): OSError
    with pytest.raises(ConfigError, match=r"tokens file .*directory"):
        book.reload_if_changed()
    assert book.broken and book.get("1" * 64) is not None
