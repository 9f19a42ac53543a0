"""Ask one question and print the answer, its token usage and its cost.

    python examples/chat.py "Why is the sky blue?"

Runs on Amazon Bedrock (your AWS credentials and region), or offline against the local
server: start `bedrock-mistral serve` and set
AWS_ENDPOINT_URL_BEDROCK_RUNTIME=http://127.0.0.1:8000 (no AWS account needed).
"""

import sys

from bedrock_mistral import BedrockMistralError, MistralClient


def main() -> int:
    question = " ".join(sys.argv[1:]) or "What is Amazon Bedrock, in one sentence?"
    client = MistralClient(model="mistral-7b")
    try:
        reply = client.chat(
            [
                {"role": "system", "content": "You answer briefly."},
                {"role": "user", "content": question},
            ],
            max_tokens=300,
            temperature=0.2,
        )
    except BedrockMistralError as err:  # one readable line that says how to fix it
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(reply.text.strip())
    cost = f", ${reply.cost_usd:.6f}" if reply.cost_usd is not None else ""
    print(
        f"[{reply.usage.input_tokens} tokens in, {reply.usage.output_tokens} out, "
        f"{reply.latency_ms:.0f} ms{cost}]",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
