"""The same code on Amazon Bedrock, on the bundled local model, or on the echo backend.

    python examples/switch_backend.py bedrock
    python examples/switch_backend.py local      # offline; needs bedrock-mistral[local]
    python examples/switch_backend.py echo       # repeats your question; for trying things out

Switching backend is one argument; everything else (validation, prompt format, retries,
streaming, errors) stays the same.
"""

import sys

from bedrock_mistral import BedrockMistralError, MistralClient


def main() -> int:
    backend = sys.argv[1] if len(sys.argv) > 1 else "bedrock"
    try:
        client = MistralClient(model="mistral-7b", backend=backend)
        reply = client.chat("Name three colours of the rainbow.", max_tokens=60, temperature=0.0)
    except BedrockMistralError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{reply.backend}: {reply.text.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
