"""Every subcommand's --help states each default at most once; `farslip --version` has one source."""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

import farslip
from farslip.cli import COMMANDS, HelpFormatter, main as farslip_main
from tests.test_readme import PARSERS

ROOT = Path(__file__).resolve().parent.parent


def _parsers():
    """(command, parser) for every farslip subcommand and sub-subcommand (eval classification, ...)."""
    def walk(parser, name):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, child in action.choices.items():
                    yield from walk(child, f"{name} {sub}")

    from farslip.eval.seed import seed_parser

    for name, build in PARSERS.items():
        yield from walk(build(), name)
    for task in ("classification", "retrieval"):
        yield f"seed {task}", seed_parser(task)


ALL = list(_parsers())


def test_every_command_with_options_is_covered():
    covered = {name.split()[0] for name, _ in ALL}
    assert covered >= set(COMMANDS) - {"models"}  # `farslip models` takes no options


@pytest.mark.parametrize("name,parser", ALL, ids=[name for name, _ in ALL])
def test_help_states_each_default_once(name, parser):
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.help in (None, argparse.SUPPRESS):
            continue
        text = formatter._expand_help(action)
        assert len(re.findall(r"\bdefault\b", text, flags=re.I)) <= 1, f"{name} {action.option_strings}: {text}"
        assert "(default: None)" not in text, f"{name} {action.option_strings}: {text}"
    parser.format_help()  # renders without error


def test_formatter_adds_a_default_only_where_the_text_has_none():
    parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    parser.add_argument("--plain", default=3, help="a number")
    parser.add_argument("--said", default=None, help="a path (default: the current folder)")
    parser.add_argument("--unset", default=None, help="anything")
    parser.add_argument("--flag", action=argparse.BooleanOptionalAction, default=False, help="a switch")
    text = " ".join(parser.format_help().split())
    assert "a number (default: 3)" in text and "a switch (default: False)" in text
    assert "(default: the current folder)" in text and text.count("default") == 3  # --unset shows none


def test_version_is_stated_once(capsys):
    assert farslip_main(["--version"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith(f"farslip {farslip.__version__} (open_clip ")
    setup = (ROOT / "setup.py").read_text()
    assert farslip.__version__ not in setup  # setup.py reads it from the package instead
    done = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == farslip.__version__
