"""`stockade run`'s click-free parser (cli/runfast.py) against its click declaration (cli/run.py):
on every command line, the fast parser gives exactly click's parameters or leaves it to click
(help, errors and unusual spellings stay click's), and it knows every option click declares."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stockade.cli.group import cli
from stockade.cli.run import run
from stockade.cli.runfast import DEFAULTS, OPTIONS, parse

ERROR = "error"


def click_params(args: list[str]) -> dict | str:
    """What click makes of `stockade run ARGS` (through the group, as the real CLI does)."""
    group = click.Context(cli, info_name="stockade", **cli.context_settings)  # -h, as the CLI has it
    try:
        return dict(cli.get_command(group, "run").make_context("run", list(args), parent=group).params)
    except (click.ClickException, click.exceptions.Exit):
        return ERROR


def agree(args: list[str]) -> dict | None:
    fast = parse(list(args))
    assert fast is None or fast == click_params(list(args)), (args, fast, click_params(list(args)))
    return fast


def test_the_fast_parser_knows_every_option_click_declares():
    declared = {}
    for param in run.params:
        if isinstance(param, click.Option):
            for opt in (*param.opts, *param.secondary_opts):
                declared[opt] = param.name
    assert {opt: spec[0] for opt, spec in OPTIONS.items()} == declared
    assert click_params(["true"]) == {**DEFAULTS, "command": ("true",)}
    choices = next(p.type.choices for p in run.params if p.name == "isolation")
    assert OPTIONS["--isolation"][1] == tuple(choices)


PLAIN = [
    ["-q", "--", "/bin/true"],
    ["/bin/true"],
    ["--", "sh", "-c", "exit 3"],
    ["-q", "sh", "-c", "echo hi"],
    ["--quiet", "--", "-x"],
    ["--policy", "p.yaml", "--name", "n1", "--workdir", "/w", "--timeout", "2.5", "-q", "--isolation",
     "landlock", "--secret", "A", "--secret", "B=api.example.com", "--upstream-ca", "ca.pem",
     "--inference-routes", "r.yaml", "--log-file", "l.jsonl", "--", "cmd", "--name", "x"],
    ["--policy=p.yaml", "--name=n1", "--workdir=/w", "--timeout=1e3", "--isolation=namespaces",
     "--secret=A", "--upstream-ca=ca.pem", "--inference-routes=r.yaml", "--log-file=l", "cmd"],
    ["--name", "a", "--name", "b", "true"],  # the last one wins
    ["--name=", "true"],
    ["--timeout", " 7 ", "true"],
    ["--timeout", "1_0", "true"],
    ["true", "--", "x"],
    ["--", "--"],
    ["--", "-"],
    ["-", "true"],
]


@pytest.mark.parametrize("args", PLAIN)
def test_plain_command_lines_skip_click_with_clicks_result(args):
    assert agree(args) is not None


LEFT_TO_CLICK = [
    [], ["-q"], ["--"], ["-h"], ["--help"], ["-q", "--help", "true"], ["--bogus", "true"], ["-x", "true"],
    ["-qq", "true"], ["-q=1", "true"], ["--quiet=1", "true"], ["--policy"], ["--policy", "--", "true"],
    ["--name", "-x", "true"], ["--timeout", "0", "true"], ["--timeout", "-1", "true"],
    ["--timeout", "abc", "true"], ["--timeout", "inf", "true"], ["--timeout", "nan", "true"],
    ["--isolation", "LANDLOCK", "true"], ["--isolation", "bwrap", "true"], ["--isolation=", "true"],
    ["--=x", "true"], ["--polic", "p", "true"],
]


@pytest.mark.parametrize("args", LEFT_TO_CLICK)
def test_help_errors_and_odd_spellings_are_left_to_click(args):
    assert agree(args) is None


TOKENS = st.sampled_from([*OPTIONS, "--", "-", "-h", "--help", "--bogus", "-qq", "true", "sh", "-c",
                          "p.yaml", "1", "0", "-1", "2.5", "inf", "landlock", "namespaces", "x=y", "",
                          "--policy=a", "--timeout=3", "--isolation=landlock", "--quiet=0", "--name="])


@settings(max_examples=400, deadline=None)
@given(st.lists(TOKENS, max_size=8))
def test_any_command_line_gets_clicks_parameters_or_clicks_answer(args):
    agree(args)


def test_the_fast_path_does_not_import_click():
    code = ("import sys\n"
            "import stockade.cli.runfast as r\n"
            "r.execute = lambda **params: sys.exit(0 if 'click' not in sys.modules else 9)\n"
            "sys.argv = ['stockade', 'run', '-q', '--name', 'x', '--', 'true']\n"
            "from stockade.cli import main\n"
            "main()\n")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
