"""The command-line page of the user guide shows the current --help of every sub-command."""

import pathlib
import textwrap

import pytest

from skh2t.cli.main import build_parser

CLI_PAGE = pathlib.Path(__file__).parents[1] / "docs" / "user_guide" / "cli.rst"


@pytest.mark.parametrize("command", ["run", "extract", "fit", "predict", "finetune", "export"])
def test_cli_page_shows_current_help(command, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    help_text = textwrap.indent(capsys.readouterr().out.rstrip(), "    ")
    assert help_text in CLI_PAGE.read_text(encoding="utf-8"), (
        f"docs/user_guide/cli.rst is out of date for `skh2t {command} --help`: paste its "
        "output (COLUMNS=80) into the page."
    )
