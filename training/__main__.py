"""``python -m training train|evaluate|tokenizer ...``: one entry point for the workshop."""

from __future__ import annotations

import importlib
import sys

_COMMANDS = {
    "train": ("training.train", "train the bundled model (--quick: the 20-minute preset)"),
    "evaluate": ("training.evaluate", "held-out exact match and expert load of a checkpoint"),
    "tokenizer": ("training.sp_tokenizer", "train the SentencePiece tokenizer"),
}


def _usage() -> str:
    lines = ["usage: python -m training COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<10} {about}" for name, (_, about) in _COMMANDS.items()]
    lines.append("\n`python -m training COMMAND --help` shows a command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    command = _COMMANDS.get(args[0])
    if command is None:
        print(f"unknown command {args[0]!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    importlib.import_module(command[0]).main(args[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
