"""Print an answer as it is generated.

    python examples/streaming.py "Write a haiku about rivers"

resume=True: if the connection drops mid-answer, the client continues from the text
already received instead of failing, and you still read one text with nothing repeated.
Leaving the `with` block early closes the HTTP stream.
"""

import sys

from bedrock_mistral import BedrockMistralError, MistralClient


def main() -> int:
    prompt = " ".join(sys.argv[1:]) or "Write a haiku about rivers."
    client = MistralClient(model="mixtral-8x7b")
    try:
        with client.stream(prompt, max_tokens=400, resume=True) as stream:
            for text in stream:
                print(text, end="", flush=True)
    except BedrockMistralError as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 1
    print()
    if stream.completion is not None:
        usage = stream.completion.usage
        print(f"[{stream.completion.stop_reason}; {usage.output_tokens} tokens]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
