"""Every command line in README.md's code blocks (outside the Jetson guide, which runs in the
device's own environment) runs as written from the repository root: its --help answers."""
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[list[str]]:
    cmds, in_code, jetson = [], False, False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("## "):
            jetson = line.startswith("## Jetson")
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code or jetson or not line.startswith((".venv/bin/", "bash scripts/")):
            continue
        words = shlex.split(line.split("  #")[0].rstrip(" \\"))
        program = words[0]
        if program.endswith("/python"):                   # a script: python SCRIPT --help
            cmds.append([program, words[1], "--help"])
        elif program in (".venv/bin/mivl", ".venv/bin/mivl-export"):
            sub = [w for w in words[1:2] if re.fullmatch(r"[a-z][a-z-]+", w)]
            cmds.append([program, *sub, "--help"] if sub and sub[0] in SUBCOMMANDS[program] else [program, "--help"])
        else:
            cmds.append(words)                            # bash scripts/...: checked to exist below
    return cmds


SUBCOMMANDS = {".venv/bin/mivl": {"ask", "info", "eval", "serve"},
               ".venv/bin/mivl-export": {"make-tiny", "build-engine", "sign", "keygen", "train", "convert",
                                         "make-default", "export"}}


def test_readme_has_the_commands():
    cmds = readme_commands()
    assert len(cmds) >= 15 and ["bash", "scripts/demo.sh"] in cmds and ["bash", "scripts/test.sh"] in cmds


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if c[0] != "bash"], ids=" ".join)
def test_readme_command_runs(cmd):
    if not (ROOT / cmd[0]).exists():
        pytest.fail(f"{cmd[0]} does not exist: run the README's set-up command (bash scripts/test.sh) first")
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "usage" in (p.stdout + p.stderr).lower(), (cmd, p.stdout[-500:], p.stderr[-1500:])


def test_readme_scripts_exist():
    for c in readme_commands():
        if c[0] == "bash":
            assert (ROOT / c[1]).is_file(), c
