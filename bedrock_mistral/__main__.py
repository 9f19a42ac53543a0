"""``python -m bedrock_mistral`` is the ``bedrock-mistral`` command."""

from bedrock_mistral.cli import main

if __name__ == "__main__":
    main()
