"""The interactive chat behind ``bedrock-mistral chat``.

Each module imports only the ones below it (the command table names the REPL for types only):

- :mod:`.repl`: the loop, and :class:`~.repl.Repl`, whose verbs make every state change;
- :mod:`.commands`: the /command table; a handler parses its argument and calls a verb;
- :mod:`.turn`: one turn, sent through the SDK's
  :class:`~bedrock_mistral.conversation.Conversation`, so a full context window drops the
  oldest turns from the prompt (the saved session keeps them);
- :mod:`.loading`: clients built in a worker thread, so Ctrl-C never lands in an import.
"""
