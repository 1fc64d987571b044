"""The README's Python examples run as written (they are the first code a user copies)."""

import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_example_runs(i):
    exec(compile(BLOCKS[i], f"README.md[python block {i}]", "exec"), {})


def test_readme_commands_match_ci():
    ci = (README.parent / ".ci" / "run").read_text()
    test_cmd = 'pip install -q -e ".[test]" && python -m pytest -n 2 -q'
    assert test_cmd in README.read_text() and test_cmd in ci
