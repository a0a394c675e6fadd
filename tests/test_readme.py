"""The README's runnable snippets (a code block right after a ``<!-- runnable -->`` line) run as written."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
RUNNABLE = re.compile(r"<!-- runnable -->\n```(python|bash)\n(.*?)\n```", re.DOTALL)


def runnable_snippets() -> list[tuple[str, str]]:
    """``(language, code)`` of every block marked runnable in the README."""
    return RUNNABLE.findall(README.read_text())


def test_the_readme_marks_python_and_shell_snippets_as_runnable():
    assert {language for language, _ in runnable_snippets()} == {"python", "bash"}


@pytest.mark.slow
@pytest.mark.parametrize("language, code", runnable_snippets(), ids=lambda v: v[:20] if len(v) > 10 else v)
def test_readme_snippet_runs(language, code, tmp_path):
    """Each snippet in a fresh directory, with this interpreter's environment (and its `jaxebm` command) on PATH."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{language} snippet failed:\n{code}\n--- stderr ---\n{result.stderr[-3000:]}"
