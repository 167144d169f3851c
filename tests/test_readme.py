"""README.md and docs/ stay true: the set-up commands are the ones CI runs, every `sngan` command
line they show and every script they run uses options that exist, and every link to a page or
file resolves."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _code_lines():
    blocks = [b for page in PAGES for b in re.findall(r"```(?:\w*)\n(.*?)```", page.read_text(), flags=re.S)]
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line:
                lines.append(line)
    return lines


def test_setup_commands_are_what_ci_runs():
    setup = README.split("## Set-up", 1)[1].split("##", 1)[0]
    commands = re.findall(r"```\n(.*?)```", setup, flags=re.S)[0].strip().splitlines()
    assert commands == ['pip install -e . && sngan train --config quickstart.yaml',
                        'pip install -e ".[test]" && python -m pytest -q -n auto --dist worksteal']
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci
    development = README.split("## Development", 1)[1].split("##", 1)[0]
    full_runs = [line.split("  #")[0].strip() for line in development.splitlines() if "-m full_run" in line]
    assert full_runs and all(line in ci for line in full_runs)  # CI also runs what the suite leaves out


def _sngan_invocations():
    found = []
    for line in _code_lines():
        if not re.search(r"(^|\s)sngan\s", line):
            continue
        words = shlex.split(line.replace("...", ""))
        if "sngan" in words:
            words = words[words.index("sngan") + 1:]
            if words and words[0] in {"train", "sample", "export", "eval-fid", "sweep", "report", "bench"}:
                found.append((words[0], [w.split("=")[0] for w in words if w.startswith("--")]))
    return found


def test_readme_shows_every_command():
    assert {cmd for cmd, _ in _sngan_invocations()} >= {"train", "sample", "eval-fid"}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_resolve(page):
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if not target.startswith(("http://", "https://")):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


@pytest.mark.parametrize("command", sorted({cmd for cmd, _ in _sngan_invocations()}))
def test_every_option_in_readme_exists(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # one option per line, unwrapped
    code, help_text, _ = cli(capsys, command, "--help")
    assert code == 0
    for cmd, options in _sngan_invocations():
        if cmd == command:
            for option in options:
                assert option in help_text, f"the docs use `sngan {command} {option}`, which --help does not list"


def _script_invocations():
    """(script, options) for each `python scripts/...` or `python benchmarks/...` line the docs show."""
    found = []
    for line in _code_lines():
        if not line.startswith(("python scripts/", "python benchmarks/")):
            continue
        words = shlex.split(line.replace("...", ""))
        if len(words) > 1:
            found.append((words[1], [w.split("=")[0] for w in words[2:] if w.startswith("--")]))
    return found


@pytest.mark.parametrize("script", sorted({s for s, options in _script_invocations() if options}))
def test_every_script_option_in_docs_exists(script):
    """The scripts' options that the docs show are ones their --help lists (scripts shown without
    options are not run: make_configs.py would rewrite the configs)."""
    assert (ROOT / script).is_file(), f"the docs run {script}, which does not exist"
    shown = {o for s, options in _script_invocations() if s == script for o in options}
    help_text = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True,
                               env={**os.environ, "COLUMNS": "200"}, check=True).stdout
    assert {o for o in shown if o not in help_text} == set(), f"{script} --help does not list them"
