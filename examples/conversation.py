"""A minimal chat loop that remembers the conversation (type an empty line to stop).

    python examples/conversation.py

The Conversation keeps the history and, when it no longer fits the model's context
window, drops the oldest exchanges and tells you which (never silently).
"""

import sys

from bedrock_mistral import BedrockMistralError, Message, MistralClient


def report(dropped: list[Message]) -> None:
    print(f"[dropped {len(dropped)} old message(s) to fit the context window]", file=sys.stderr)


def main() -> int:
    chat = MistralClient(model="mistral-7b").conversation(system="You are a friendly assistant.")
    chat.on_trim = report
    for line in sys.stdin:
        text = line.rstrip("\n")
        if not text:
            break
        try:
            for piece in chat.stream(text, max_tokens=300):
                print(piece, end="", flush=True)
        except BedrockMistralError as err:
            print(f"\nerror: {err}", file=sys.stderr)
            return 1
        print()
    print(f"[{len(chat.messages)} messages in the history]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
