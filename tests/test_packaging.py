"""The package as users install it: every subpackage in the wheel, the grammar shipped as data."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_every_subpackage_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    mapping = config["package-dir"]
    found = set()
    for name, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *rel.parts]))
    assert found <= listed, f"subpackages missing from [tool.setuptools] packages: {sorted(found - listed)}"
    assert "*.lark" in config["package-data"]["einattn.grammar"]


def test_grammar_is_importable_as_package_data():
    from einattn.grammar import grammar_text

    assert "rank_decl" in grammar_text()


def test_readme_tour_runs(capsys):
    import re

    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    import os

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        exec(compile(block, "README.md", "exec"), {})
    finally:
        os.chdir(cwd)
    assert "bad.ein:3:12: error: undefined tensor `Z`" in capsys.readouterr().out
