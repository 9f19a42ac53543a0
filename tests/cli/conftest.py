"""CLI tests: every test may ask for ``cli_home``, an isolated HOME with its own config."""

from tests.helpers.cli import cli_home_fixture

__all__ = ["cli_home_fixture"]
