"""Every ``fiona`` command the README and docs/ show is one the command line accepts.

Concrete command lines are parsed by the real parsers, exactly as a user would type them.
Usage lines (with ``[...]``, ``(a | b)`` or upper-case placeholders in brackets) are checked
for their sub-command path and that every option they name exists.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from fiona_cli.main import build_parser
from fiona_deid.cli import build_parser as deid_parser
from redcap_emulator.cli import build_parser as emulator_parser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
USAGE = re.compile(r"[\[\]()|]")


def shown_commands() -> list[tuple[str, str]]:
    """(file:line, command) for each ``fiona ...`` line inside a fenced code block."""
    found = []
    for doc in DOCS:
        inside, pending, start = False, "", 0
        for number, raw in enumerate(doc.read_text().splitlines(), 1):
            if raw.lstrip().startswith("```"):
                inside, pending = not inside, ""
                continue
            line = raw.split("  #", 1)[0].strip()
            if not inside or not (pending or re.match(r"^(\$ )?(\S*/)?fiona ", line)):
                continue
            start = start if pending else number
            pending += " " + line.removesuffix("\\").strip()
            if not line.endswith("\\"):
                command = pending.strip().removeprefix("$ ")
                found.append((f"{doc.relative_to(REPO)}:{start}", command))
                pending = ""
    return found


def parser_for(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser that takes ``argv`` (after ``fiona``), and the arguments it gets."""
    if argv[:1] == ["deid"]:
        return deid_parser(), argv[1:]
    if argv[:2] == ["redcap", "emulator"]:
        return emulator_parser(), argv[2:]
    return build_parser(), argv


def sub_parser(parser: argparse.ArgumentParser, words: list[str]) -> argparse.ArgumentParser:
    """Follow sub-command words as far as they go."""
    for word in words:
        commands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not commands or word not in commands[0].choices:
            break
        parser = commands[0].choices[word]
    return parser


COMMANDS = shown_commands()


def test_the_docs_show_commands() -> None:
    assert len(COMMANDS) >= 20  # README and docs/ are full of them: the extraction works


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_a_command_shown_in_the_docs_is_accepted(
    where: str, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = shlex.split(command)[1:]
    parser, args = parser_for(argv)
    if USAGE.search(command):
        target = sub_parser(parser, args)
        options = {a.split("=")[0] for a in args if a.startswith("--")}
        unknown = options - set(target._option_string_actions)
        assert not unknown, f"{where}: {command!r} shows options {unknown} that do not exist"
        return
    try:
        parser.parse_args(args)
    except SystemExit as exit_:
        if exit_.code != 0:  # --help exits 0
            pytest.fail(f"{where}: {command!r} is refused: {capsys.readouterr().err.strip()}")
