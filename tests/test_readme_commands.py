"""Every command line in README.md's code blocks (outside the Jetson guide, which runs in the
device's own environment) runs as written in a new shell after the README's set-up: a login shell
with a clean environment, from the repository root; its --help answers."""
import os
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PROGRAMS = {"mivl": {"ask", "info", "eval", "serve"},
            "mivl-export": {"make-tiny", "build-engine", "sign", "keygen", "train", "distill", "convert", "make-default",
                            "export"}}


def readme_commands() -> list[list[str]]:
    cmds, in_code, jetson = [], False, False
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("## "):
            jetson = line.startswith("## Jetson")
        if line.startswith("```"):
            in_code = not in_code
            continue
        if not in_code or jetson:
            continue
        first = line.split(" ", 1)[0]
        if not (first in PROGRAMS or first == "bash" or first.endswith("/python")):
            continue
        words = shlex.split(line.split("  #")[0].rstrip(" \\"))
        program = words[0]
        if program.endswith("/python"):                   # a script: python SCRIPT --help
            cmds.append([program, words[1], "--help"])
        elif program in PROGRAMS:
            sub = words[1:2] if words[1:2] and words[1] in PROGRAMS[program] else []
            cmds.append([program, *sub, "--help"])
        elif program == "bash":
            cmds.append(words)                            # bash scripts/...: checked to exist below
    return cmds


def new_shell(cmd: list[str]) -> subprocess.CompletedProcess:
    """cmd in a new login shell: nothing of this process's environment but HOME."""
    line = f"cd {shlex.quote(str(ROOT))} && " + shlex.join(cmd)
    return subprocess.run(["env", "-i", f"HOME={os.environ.get('HOME', '/root')}", "bash", "-lc", line],
                          capture_output=True, text=True, timeout=120)


def test_readme_has_the_commands():
    cmds = readme_commands()
    assert len(cmds) >= 15 and ["bash", "scripts/demo.sh"] in cmds and ["bash", "scripts/test.sh"] in cmds
    assert any(c[0] == "mivl" for c in cmds) and any(c[0] == "mivl-export" for c in cmds)


@pytest.mark.parametrize("cmd", [c for c in readme_commands() if c[0] != "bash"], ids=" ".join)
def test_readme_command_runs_in_a_new_shell(cmd):
    p = new_shell(cmd)
    assert p.returncode == 0 and "usage" in (p.stdout + p.stderr).lower(), (
        f"{' '.join(cmd)} fails in a new shell (did the set-up run? bash scripts/test.sh)",
        p.stdout[-500:], p.stderr[-1500:])


def test_readme_scripts_exist():
    for c in readme_commands():
        if c[0] == "bash":
            assert (ROOT / c[1]).is_file(), c

