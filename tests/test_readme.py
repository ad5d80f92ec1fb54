"""Every Python example in the README runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_examples_run() -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README should show Python usage"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "readme"})


def test_readme_opens_with_setup_and_test_commands() -> None:
    commands = re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S)
    assert "pip install torch==2.13.0" in commands[0] and "kinema " in commands[0]
    assert "pytest" in commands[1]
