"""``bedrock-mistral ask``: one question, one answer."""

from __future__ import annotations

import json
from typing import Any

import click

from bedrock_mistral.cli.options import client_options, current_env, settings_from

__all__ = ["ask", "build_prompt"]


def build_prompt(words: tuple[str, ...], piped: str) -> str:
    """The question, with piped text placed before it (``cat notes | ask "summarise"``)."""
    question = " ".join(words).strip()
    piped = piped.strip("\n")
    if piped.strip() and question:
        return f"{piped}\n\n{question}"
    return question or piped


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("prompt", nargs=-1)
@client_options
@click.option("-s", "--system", default=None, help="System prompt.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole completion as JSON.")
@click.option(
    "--no-stream", is_flag=True, help="Wait for the whole answer instead of streaming it."
)
@click.option(
    "--plain", is_flag=True, help="Print raw text even on a terminal (no Markdown rendering)."
)
@click.option("--no-stdin", is_flag=True, help="Do not read piped standard input.")
def ask(
    prompt: tuple[str, ...],
    system: str | None,
    as_json: bool,
    no_stream: bool,
    plain: bool,
    no_stdin: bool,
    **client_flags: Any,
) -> None:
    """Ask one question and print the answer.

    \b
    Piped input goes before the question:
      cat notes.txt | bedrock-mistral ask "Summarise this in three bullets"
      bedrock-mistral ask --json "2+2?" | jq .usage

    On a terminal the answer streams as Markdown; into a pipe or file it is plain text.
    Exit codes: 0 ok, 1 failure, 2 usage, 3 setup/access, 4 throttled, 130 Ctrl-C.
    """
    env = current_env()
    piped = "" if no_stdin or env.stdin_isatty else env.stdin.read()
    text = build_prompt(prompt, piped)
    if not text.strip():
        raise click.UsageError('nothing to ask: give a prompt (ask "...") or pipe text in')
    settings = settings_from(**client_flags)

    from bedrock_mistral.cli.clients import make_client
    from bedrock_mistral.cli.render import PlainView, make_view
    from bedrock_mistral.cli.reply import footer, stream_reply

    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    with make_client(settings) as client:
        if as_json:
            if no_stream:
                completion = client.chat(messages, **settings.params)
            else:
                with client.stream(messages, **settings.params) as reply_stream:
                    completion = reply_stream.until_done()
            env.write(
                json.dumps(completion.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"
            )
            return
        view = PlainView(env) if plain else make_view(env)
        reply = stream_reply(client, messages, settings.params, view, stream=not no_stream)
    if env._isatty(env.stderr_file) or reply.cut:
        env.note(footer(reply))
    if reply.cut:
        raise click.exceptions.Exit(130)
