"""The ``bedrock-mistral`` command.

Commands live one group per module and are imported only when run, so ``--help`` costs
little more than importing click: no boto3, no torch, no pydantic, no rich.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from typing import Any

import click

from bedrock_mistral import __version__

__all__ = ["cli", "main"]

# name -> (module, attribute, one-line help shown by --help without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "chat": (
        "bedrock_mistral.cli.chat_cmd",
        "chat",
        "Chat in the terminal: streamed Markdown, sessions, /commands.",
    ),
    "ask": (
        "bedrock_mistral.cli.ask_cmd",
        "ask",
        "Ask one question (reads piped stdin); --json for the whole reply.",
    ),
    "models": (
        "bedrock_mistral.cli.models_cmd",
        "models",
        "List Mistral models: ids, limits, prices, access.",
    ),
    "sessions": (
        "bedrock_mistral.cli.sessions_cmd",
        "sessions",
        "List, show and delete saved chat sessions.",
    ),
    "config": (
        "bedrock_mistral.cli.config_cmd",
        "config",
        "Show and change settings (config.toml).",
    ),
    "doctor": (
        "bedrock_mistral.cli.doctor_cmd",
        "doctor",
        "Check credentials, region, endpoint, access, local model.",
    ),
    "backends": (
        "bedrock_mistral.cli.backends_cmd",
        "backends",
        "List backends (built-in and plugins) and whether each runs here.",
    ),
    "local": (
        "bedrock_mistral.cli.local_cmd",
        "local",
        "Look inside the local model, quantise or export it (GGUF).",
    ),
    "serve": (
        "bedrock_mistral.cli.serve_cmd",
        "serve",
        "Serve a backend over the Bedrock runtime protocol.",
    ),
    "batch": (
        "bedrock_mistral.cli.batch_cmd",
        "batch",
        "Run many prompts concurrently and resumably.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use, and which funnels errors.

    Every exception from a command ends here: bedrock_mistral errors become one line
    with the fix and a documented exit code (see :mod:`bedrock_mistral.cli.exits`);
    ``--debug`` shows the traceback instead.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        present = [name for name, (module, _, _) in COMMANDS.items() if _module_exists(module)]
        return present + sorted(set(super().list_commands(ctx)) - set(present))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None or not _module_exists(entry[0]):
            return super().get_command(ctx, cmd_name)
        command = getattr(importlib.import_module(entry[0]), entry[1])
        if not isinstance(command, click.Command):
            raise TypeError(f"{entry[0]}.{entry[1]} is not a click command")
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx) if name in COMMANDS]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except BrokenPipeError:
            _quiet_stdout()  # the reader left (`| head`): stop quietly, as shell tools do
            raise click.exceptions.Exit(141) from None
        except (KeyboardInterrupt, Exception) as err:
            if _debug(ctx):
                raise
            _report(ctx, err)


def _quiet_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _debug(ctx: click.Context) -> bool:
    return bool(ctx.find_root().meta.get("bedrock_mistral.debug"))


def _report(ctx: click.Context, err: BaseException) -> None:
    from bedrock_mistral.cli.exits import describe
    from bedrock_mistral.cli.options import current_env

    status, line = describe(err)
    env = current_env()
    if isinstance(err, KeyboardInterrupt):
        env.note("interrupted")
    else:
        env.error(line)
    raise click.exceptions.Exit(int(status))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--debug",
    is_flag=True,
    envvar="BEDROCK_MISTRAL_DEBUG",
    help="Show tracebacks and debug logs (also BEDROCK_MISTRAL_DEBUG=1).",
)
@click.version_option(__version__, package_name="bedrock-mistral")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Mistral models on Amazon Bedrock, and offline on your machine.

    \b
    Quick start:
      bedrock-mistral chat                         # chat with Mistral 7B on Bedrock
      bedrock-mistral chat --backend local         # ...or offline, with the bundled model
      bedrock-mistral ask "What is a mixture of experts?"
      cat notes.txt | bedrock-mistral ask "Summarise this" -m mixtral-8x7b
      bedrock-mistral models                       # ids, limits, prices, access
      bedrock-mistral doctor                       # what is missing, and how to fix it

    \b
    Settings come from flags, then the environment (BEDROCK_MISTRAL_MODEL,
    BEDROCK_MISTRAL_BACKEND, AWS_PROFILE, AWS_REGION, ...), then
    `bedrock-mistral config path`. Exit codes: 0 ok, 1 failure, 2 usage,
    3 setup/access, 4 throttled, 130 interrupted.
    """
    ctx.meta["bedrock_mistral.debug"] = debug
    if debug:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("bedrock_mistral").setLevel(logging.DEBUG)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="bedrock-mistral")
