"""``bedrock-mistral local``: look inside the local model, quantise and export checkpoints.

``local route`` draws the expert-assignment picture of the Mixtral paper for your own
text: every token coloured by the expert its router picked first, in one layer, or as a
tokens x layers grid.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from bedrock_mistral.cli.options import current_env, settings_from

if TYPE_CHECKING:
    from rich.console import RenderableType

    from local_backend.runtime import RoutingTrace

__all__ = ["local", "piece_text"]

# Distinct backgrounds, readable with black text; more experts reuse them (the number tells).
PALETTE = (
    "#e06c75",
    "#98c379",
    "#e5c07b",
    "#61afef",
    "#c678dd",
    "#56b6c2",
    "#d19a66",
    "#abb2bf",
    "#ff9e80",
    "#b9f6ca",
    "#ffe57f",
    "#80d8ff",
    "#ea80fc",
    "#a7ffeb",
    "#ffd180",
    "#cfd8dc",
)


def piece_text(piece: str) -> str:
    """A SentencePiece piece as it reads: ``▁`` is a space, byte pieces are shown."""
    if piece.startswith("<0x") and piece.endswith(">"):
        return {"<0x0A>": "↵", "<0x09>": "⇥"}.get(piece, piece)
    return piece.replace("▁", " ")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def local() -> None:
    """Look inside the local model, quantise or export checkpoints (needs the local extra)."""


@local.command()
@click.argument("src", type=click.Path(file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option(
    "--to",
    "scheme",
    type=click.Choice(["int8", "int4"]),
    required=True,
    help="int8: per output channel; int4: group-wise (smaller, a little less exact).",
)
@click.option(
    "--group-size",
    type=click.Choice(["32", "64", "128"]),
    default=None,
    help="int4 only: input columns sharing a scale (default 64; smaller is more exact).",
)
@click.option(
    "--dtype",
    default=None,
    help="dtype of the tensors left unquantised (default: the checkpoint's).",
)
def quantize(src: str, dst: str, scheme: str, group_size: str | None, dtype: str | None) -> None:
    """Write SRC's weights quantised to DST, a folder that loads directly.

    \b
      bedrock-mistral local quantize ./Mistral-7B-Instruct-v0.2 ./mistral-int4 --to int4
      bedrock-mistral ask --backend local --local-model ./mistral-int4 "Hello"
    """
    from bedrock_mistral.errors import ValidationError
    from local_backend.errors import LocalBackendError
    from local_backend.quant import QuantSpec
    from local_backend.quant_checkpoint import QUANTIZED_FILE, save_quantized

    env = current_env()
    try:
        spec = QuantSpec.parse(scheme, None if group_size is None else int(group_size))
        with env.err.status(f"quantising {src} to {scheme}…"):
            out = save_quantized(src, dst, spec, dtype=dtype)
    except LocalBackendError as err:
        raise ValidationError(f"cannot quantise {src}: {err}") from err
    size = (out / QUANTIZED_FILE).stat().st_size / 1e6
    how = scheme if scheme == "int8" else f"int4, group size {spec.group_size}"
    env.write(f"wrote {out} ({how}, {size:.1f} MB)\n")


@local.command()
@click.argument("source", required=False)
@click.option(
    "--gguf",
    "out",
    required=True,
    type=click.Path(dir_okay=False),
    help="The GGUF file to write (its folder must exist).",
)
@click.option(
    "--type",
    "file_type",
    default="f16",
    show_default=True,
    help="Tensor type: f32, f16, q8_0 or q4_0 (norms and the MoE router stay f32).",
)
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
def export(source: str | None, out: str, file_type: str, force: bool) -> None:
    """Write SOURCE (default: the bundled model) as a GGUF file llama.cpp runs.

    SOURCE is a checkpoint folder (Hugging Face, Mistral, or one `local quantize` wrote,
    dequantised first), a .gguf file, or ollama:NAME.

    \b
      bedrock-mistral local export --gguf bundled.gguf --type q8_0
      llama-cli -m bundled.gguf -p "[INST] What is 2 plus 3? [/INST]" -n 16
    """
    from bedrock_mistral.errors import (
        Arg,
        BackendUnavailableError,
        Fix,
        ValidationError,
        install_extra,
    )

    try:
        from local_backend.errors import CheckpointNotFoundError, LocalBackendError
        from local_backend.gguf_export import FILE_TYPES, export_gguf
    except ImportError as err:
        raise BackendUnavailableError(
            f"exporting needs torch: {err}", fix=install_extra("local")
        ) from err
    kind = file_type.lower()
    if kind not in FILE_TYPES:
        raise ValidationError(
            f"--type {file_type} is not a type we write",
            field="type",
            value=file_type,
            allowed=", ".join(FILE_TYPES),
            fix=Fix(f"pass {{}} with one of {', '.join(FILE_TYPES)}", Arg("type")),
        )
    what = source or "the bundled model"
    env = current_env()
    try:
        with env.err.status(f"exporting {what} to {out} ({kind})…"):
            summary = export_gguf(source, out, file_type=kind, force=force)
    except FileExistsError as err:
        fix = Fix("pass {} to overwrite it, or choose another name", Arg("force"))
        raise ValidationError(f"{out} exists", fix=fix) from err
    except CheckpointNotFoundError as err:
        fix = Fix(
            "SOURCE is a checkpoint folder, a .gguf file, ollama:NAME, or nothing for the "
            "bundled model"
        )
        raise ValidationError(f"cannot export {what}: {err}", fix=fix) from err
    except FileNotFoundError as err:
        fix = Fix("create the folder first, or write the file somewhere that exists")
        raise ValidationError(f"cannot write {out}: {err}", fix=fix) from err
    except LocalBackendError as err:
        raise ValidationError(f"cannot export {what}: {err}") from err
    counts = ", ".join(f"{n} {t}" for t, n in sorted(summary.types.items()))
    size = summary.nbytes / 1e6
    env.write(f"wrote {summary.path} ({summary.tensors} tensors: {counts}; {size:.1f} MB)\n")
    if summary.sliding_window is not None:
        env.note(
            f"note: the model attends over a sliding window of {summary.sliding_window} tokens; "
            "llama.cpp's llama architecture ignores it (full attention), so its output matches "
            f"ours only while prompt and reply fit in {summary.sliding_window} tokens"
        )


@local.command()
@click.argument("text", nargs=-1, required=True)
@click.option(
    "-l",
    "--layer",
    type=int,
    default=None,
    help="Show one layer (0-based); default: all layers as a grid.",
)
@click.option(
    "--chat", is_flag=True, help="Route the full chat prompt ([INST] template), not the bare text."
)
@click.option(
    "--local-model",
    default=None,
    type=click.Path(file_okay=False),
    help="Checkpoint folder (default: bundled).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the routing trace as JSON.")
def route(
    text: tuple[str, ...], layer: int | None, chat: bool, local_model: str | None, as_json: bool
) -> None:
    """Colour each token of TEXT by the expert its router chose.

    \b
      bedrock-mistral local route "The quick brown fox" --layer 0
      bedrock-mistral local route --chat "Write a haiku"      # all layers
    """
    env = current_env()
    settings = settings_from(local_model=local_model)
    trace = _trace(" ".join(text), chat=chat, local_model=settings.local_model, env=env)
    n_layers = len(trace.experts)
    if layer is not None and not 0 <= layer < n_layers:
        raise click.BadParameter(f"the model has layers 0 to {n_layers - 1}", param_hint="--layer")
    if as_json:
        payload = {
            "tokens": trace.pieces,
            "token_ids": trace.token_ids,
            "num_experts": trace.num_experts,
            "experts": trace.experts if layer is None else [trace.experts[layer]],
            "weights": trace.weights if layer is None else [trace.weights[layer]],
            "layers": list(range(n_layers)) if layer is None else [layer],
        }
        env.write(json.dumps(payload, ensure_ascii=False) + "\n")
        return
    if layer is None:
        env.print(grid(trace))
    else:
        env.print(one_layer(trace, layer, colour=env.rich_stdout and not env.out.no_color))
    env.print(legend(trace, layer))


def _trace(text: str, *, chat: bool, local_model: str | None, env: Any) -> RoutingTrace:
    from bedrock_mistral.backends.local import shared_model
    from bedrock_mistral.prompt import BOS, format_prompt, neutralize

    prompt = format_prompt([{"role": "user", "content": text}]) if chat else BOS + neutralize(text)
    with env.err.status("loading the local model…"):
        model = shared_model(local_model, None)
    try:
        return model.route(prompt)
    except ValueError as err:  # a dense model has no experts; an empty prompt has no tokens
        from bedrock_mistral.errors import ValidationError

        raise ValidationError(str(err)) from err


def _style(expert: int) -> str:
    return f"black on {PALETTE[expert % len(PALETTE)]}"


def one_layer(trace: RoutingTrace, layer: int, *, colour: bool = True) -> RenderableType:
    """The tokens as running text, each on its first-choice expert's colour.

    Without colour (a pipe, NO_COLOR) each token is followed by its expert: ``fox[3]``.
    """
    from rich.text import Text

    line = Text()
    for piece, chosen in zip(trace.pieces, trace.experts[layer], strict=True):
        if colour:
            line.append(piece_text(piece), style=_style(chosen[0]))
        else:
            line.append(f"{piece_text(piece)}[{chosen[0]}]")
        if piece == "<0x0A>":
            line.append("\n")
    return line


def grid(trace: RoutingTrace) -> RenderableType:
    """Tokens down, layers across: each cell the first-choice expert's number on its colour."""
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, padding=(0, 0), show_edge=False, pad_edge=False)
    table.add_column("token", no_wrap=True, max_width=16, overflow="ellipsis", style="bold")
    for index in range(len(trace.experts)):
        table.add_column(f"{index:>2}", no_wrap=True, justify="right")
    width = len(str(trace.num_experts - 1)) + 1
    for position, piece in enumerate(trace.pieces):
        cells = [
            Text(f"{chosen[position][0]:>{width}}", style=_style(chosen[position][0]))
            for chosen in trace.experts
        ]
        table.add_row(repr(piece_text(piece))[1:-1] + " ", *cells)
    return table


def legend(trace: RoutingTrace, layer: int | None) -> RenderableType:
    """Expert colours, with how many tokens chose each one first (in the layer, or overall)."""
    from rich.text import Text

    counts = [0] * trace.num_experts
    for per_token in trace.experts if layer is None else [trace.experts[layer]]:
        for chosen in per_token:
            counts[chosen[0]] += 1
    line = Text("\nexperts: ", style="dim")
    for expert, count in enumerate(counts):
        line.append(f" {expert} ", style=_style(expert))
        line.append(f" {count}  ", style="dim")
    where = f"layer {layer}" if layer is not None else f"all {len(trace.experts)} layers"
    line.append(f"(first-choice counts, {where}, {len(trace.pieces)} tokens)", style="dim")
    return line
