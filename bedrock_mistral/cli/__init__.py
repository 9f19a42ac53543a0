"""The ``bedrock-mistral`` command (placeholder group until the CLI issue lands)."""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bedrock-mistral")
def cli() -> None:
    """Mistral models on Amazon Bedrock, and offline on your machine."""


def main() -> None:
    cli()
