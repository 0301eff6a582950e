"""`citysense profiles check`: validate profile files and the registry, naming file, line, field."""

from __future__ import annotations

import argparse
from pathlib import Path

from common.settings import CommonSettings
from device_profiles import ContractError, load_profiles, load_registry, load_variants


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["check"], help="what to do with the profiles")
    parser.add_argument("--profiles", type=Path, help="profiles folder (CITYSENSE_PROFILES)")
    parser.add_argument("--registry", type=Path, help="registry CSV (CITYSENSE_REGISTRY)")


def main(args: argparse.Namespace) -> int:
    settings = CommonSettings()
    folder = args.profiles or settings.profiles
    registry_path = args.registry or settings.registry
    try:
        profiles = load_profiles(folder)
        variants = load_variants(folder, profiles)
        registry = load_registry(registry_path, profiles, variants)
    except ContractError as exc:
        for problem in exc.problems:
            print(f"error: {problem}")
        print(f"{len(exc.problems)} problem(s) found")
        return 1
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
