"""Every code block in README.md and docs/*.md runs, so the docs cannot rot.

- ```python blocks are executed in order, one namespace per document (a block can use names from the
  blocks above it), with the working directory set to a temporary folder.
- ```bash / ```sh blocks are checked, not run (they install packages or run long trainings): every
  `python -m tinymoon.bench NAME` names an existing benchmark, and every `python examples/X.py` or
  `python -m tinymoon...` entry point answers `--help`.
"""
import gc
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))
BLOCK = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)


def blocks(path, lang):
    return [code for kind, code in BLOCK.findall(path.read_text()) if kind == lang]


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_python_blocks_run(doc, tmp_path, monkeypatch):
    # Each doc starts as a fresh session would: the tapes earlier docs left in reference cycles are
    # collected now, not in the middle of a block that reads tm.memory.saved_bytes() twice.
    gc.collect()
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": f"doc_{doc.stem}"}
    for i, code in enumerate(blocks(doc, "python")):
        try:
            exec(compile(code, f"{doc.name}[python block {i}]", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message is the point
            raise AssertionError(f"{doc.name}, python block {i} failed: {type(e).__name__}: {e}\n{code}") from e


def _commands(doc):
    for code in blocks(doc, "bash") + blocks(doc, "sh"):
        for line in code.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;|\|", line):
                part = part.strip()
                if part.startswith(("python ", "mpiexec ")):
                    yield part


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_shell_commands_name_real_entry_points(doc):
    from tinymoon.bench.__main__ import available
    benches = available()
    for cmd in _commands(doc):
        words = shlex.split(cmd)
        if "mpiexec" == words[0]:
            words = words[words.index("python"):]
        if words[1:3] == ["-m", "tinymoon.bench"]:
            assert len(words) > 3 and words[3] in benches, f"{doc.name}: `{cmd}` names no benchmark ({benches})"
            target = ["-m", "tinymoon.bench", words[3], "--help"]
        elif words[1] == "-m":
            target = ["-m", words[2], "--help"]
        elif words[1].endswith(".py"):
            target = [str(ROOT / words[1]), "--help"]
        else:
            continue
        r = subprocess.run([sys.executable, *target], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 0, f"{doc.name}: `{' '.join(target)}` failed:\n{r.stderr[-2000:]}"
