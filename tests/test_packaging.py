"""pyproject.toml and environment.yml must pin the same torch family."""
import re

import tomllib
from conftest import ROOT

TORCH = ("torch", "torchvision", "torchaudio")


def pins(lines):
    out = {}
    for line in lines:
        m = re.match(r"^\s*(?:-\s*)?[\"']?(torch|torchvision|torchaudio)\s*(==[^\"',\s]+)", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_environment_yml_pins_the_same_torch_family_as_pyproject():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    from_pyproject = pins(deps)
    from_env = pins((ROOT / "environment.yml").read_text().splitlines())
    assert set(from_pyproject) == set(TORCH), from_pyproject
    assert from_env == from_pyproject


def test_environment_yml_installs_the_package_with_python_311():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"python=3\.11", text) and '-e ".[dev]"' in text
