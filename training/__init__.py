"""How the bundled model was made: synthetic data, tokenizer, training and evaluation.

Not part of the installed package: run it from a checkout, ``python -m training --help``.
It builds on :mod:`local_backend` (the model) and :mod:`bedrock_mistral.prompt` (the
``[INST]`` format the data is written in); neither depends on it.
"""
