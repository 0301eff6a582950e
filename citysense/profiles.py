"""`citysense profiles check`: validate profile files and the registry, naming file, line, field."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import orjson

from common.settings import CommonSettings
from device_profiles import (
    ContractError,
    Profile,
    Registry,
    Variant,
    load_profiles,
    load_registry,
    load_variants,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check"], help="what to do with the profiles")
    parser.add_argument("--profiles", type=Path, help="profiles folder (CITYSENSE_PROFILES)")
    parser.add_argument("--registry", type=Path, help="registry CSV (CITYSENSE_REGISTRY)")
    parser.add_argument(
        "--json", action="store_true", help="one JSON object on stdout: ok, problems, counts"
    )


def main(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    folder = args.profiles or settings.profiles
    registry_path = args.registry or settings.registry
    try:
        profiles = load_profiles(folder)
        variants = load_variants(folder, profiles)
        registry = load_registry(registry_path, profiles, variants)
    except ContractError as exc:
        if args.json:
            problems = [{"problem": str(p)} | _where(p) for p in exc.problems]
            print(orjson.dumps({"ok": False, "problems": problems}).decode())
            return 1
        for problem in exc.problems:
            print(f"error: {problem}")
        print(f"{len(exc.problems)} problem(s) found")
        return 1
    if args.json:
        print(orjson.dumps(_summary(profiles, variants, registry, registry_path)).decode())
        return 0
    for name, profile in sorted(profiles.items()):
        count = len(registry.of(profile=name))
        print(f"ok: profile {name}: {len(profile.fields)} fields, {count} devices")
    for (profile_name, variant_name), variant in sorted(variants.items()):
        count = sum(1 for d in registry.devices.values() if d.variant == variant_name)
        print(
            f"ok: variant {variant_name} of {profile_name}: {len(variant.fields)} mapped "
            f"fields, {count} devices"
        )
    print(
        f"ok: registry {registry_path.name}: {len(registry.devices)} devices in "
        f"{len(registry.districts)} districts"
    )
    return 0


def _where(problem: object) -> dict[str, object]:
    """The file, line and place (a field, a column) a problem names, where it names them."""
    found = {k: getattr(problem, k, None) for k in ("file", "line", "where", "message")}
    return {k: str(v) if isinstance(v, Path) else v for k, v in found.items() if v is not None}


def _summary(
    profiles: Mapping[str, Profile],
    variants: Mapping[tuple[str, str], Variant],
    registry: Registry,
    registry_path: Path,
) -> dict[str, object]:
    return {
        "ok": True,
        "problems": [],
        "profiles": {
            name: {"fields": len(p.fields), "devices": len(registry.of(profile=name))}
            for name, p in sorted(profiles.items())
        },
        "variants": {
            f"{profile}/{name}": {
                "fields": len(v.fields),
                "devices": sum(1 for d in registry.devices.values() if d.variant == name),
            }
            for (profile, name), v in sorted(variants.items())
        },
        "registry": {
            "file": registry_path.name,
            "devices": len(registry.devices),
            "districts": len(registry.districts),
        },
    }
