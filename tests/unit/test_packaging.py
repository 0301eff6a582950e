"""What ships: every package of the tree is in the wheel and in the container image, so a
reshaping of the tree cannot leave the image without a layer (the Dockerfile is not built here:
no container engine on this machine)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests", "bench"}


def test_the_wheel_includes_every_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    included = {p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert included == PACKAGES


def test_the_image_copies_every_package() -> None:
    copied = set(re.findall(r"^COPY (\w+) \1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert copied == PACKAGES
