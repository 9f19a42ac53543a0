"""Same weights, same prompt, same greedy answer: the bundled model through llama.cpp's
server (raw mode) against our own PyTorch backend, on the model's held-out evaluation
prompts (``training.data.heldout``, every family).

llama.cpp runs a Mixtral GGUF as its ``llama`` architecture, which has no sliding window;
ours attends over the last 64 tokens only. So only prompts whose prompt plus answer fit in
64 tokens are compared: there both models compute the same function.

The figures (prompts whose first N tokens agree, mean agreed prefix, whole answers equal)
are printed and asserted against floors measured on this machine (docs/engines.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import pytest

from bedrock_mistral import MistralClient
from bedrock_mistral.models import resolve_model
from bedrock_mistral.prompt import format_prompt
from tests.helpers.llamacpp import MODEL_ALIAS, LlamaCppServer

FIRST_N = 4  # tokens that must agree for a prompt to count as agreeing
MAX_NEW = 12
PER_FAMILY = 4
WINDOW = 64  # the bundled model's sliding window
# Floors under the figures measured here (docs/engines.md), with room for a near-tie
# between two tokens going the other way under different float rounding.
MIN_SERVER_AGREE, MIN_SERVER_EXACT = 0.92, 0.92
MIN_IDS_AGREE, MIN_IDS_EXACT = 0.95, 0.95


@dataclass(frozen=True)
class Pair:
    family: str
    prompt: str
    local: list[int]
    engine: list[int]

    @property
    def agreed(self) -> int:
        """Length of the common prefix of the two answers' tokens."""
        n = 0
        for a, b in zip(self.local, self.engine, strict=False):
            if a != b:
                break
            n += 1
        return n


def summary(name: str, pairs: list[Pair]) -> tuple[float, float, str]:
    agree = sum(p.local[:FIRST_N] == p.engine[:FIRST_N] for p in pairs) / len(pairs)
    exact = sum(p.local == p.engine for p in pairs) / len(pairs)
    mean_prefix = sum(p.agreed for p in pairs) / len(pairs)
    mean_len = sum(len(p.local) for p in pairs) / len(pairs)
    differ = "\n".join(
        f"    {p.family}: {p.prompt!r}: local {p.local} engine {p.engine}"
        for p in pairs
        if p.local != p.engine
    )
    report = (
        f"{name}: {len(pairs)} prompts, first {FIRST_N} tokens agree {agree:.1%}, whole "
        f"answers equal {exact:.1%}, mean agreed prefix {mean_prefix:.2f} of {mean_len:.2f} "
        f"tokens\n{differ}"
    )
    return agree, exact, report


@pytest.mark.slow  # ~40 s: the local model answers 50 prompts
def test_greedy_output_agrees_with_our_local_backend(llamacpp: LlamaCppServer) -> None:
    """Two routes to llama.cpp: our client in raw mode through its server (what a user gets),
    and the same token ids through llama.cpp's library (the engine's arithmetic alone).

    The server route reads exactly our prompt tokens (test_llamacpp_tokens.py), but
    llama-cpp-python prints nothing for a piece over 32 bytes (the identity replies are two
    such pieces), so its text can be shorter than the tokens it generated.
    """
    import llama_cpp

    from local_backend.runtime import BUNDLED_WEIGHTS
    from local_backend.tokenizer import Tokenizer
    from training.data import EVAL_FAMILIES, heldout

    tokenizer = Tokenizer.from_file(BUNDLED_WEIGHTS / "tokenizer.model")

    def answer_tokens(prompt: str, text: str) -> list[int]:
        # The answer's tokens as they follow the prompt ("[/INST]" is one piece, so the
        # boundary is the same in both encodings).
        return tokenizer.encode_prompt(prompt + text)[len(tokenizer.encode_prompt(prompt)) :]

    library = llama_cpp.Llama(str(llamacpp.gguf), n_ctx=WINDOW, n_threads=1, verbose=False)

    def greedy_ids(ids: list[int]) -> list[int]:
        out: list[int] = []
        for token in library.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True):
            if token == tokenizer.eos_id or len(out) == MAX_NEW:
                break
            out.append(int(token))
        return out

    spec = replace(resolve_model("mistral-7b"), model_id=MODEL_ALIAS, context_window=512)
    engine = MistralClient(model=spec, backend="llamacpp", base_url=llamacpp.url, prompt_mode="raw")
    local = MistralClient(backend="local")
    server: list[Pair] = []
    by_ids: list[Pair] = []
    try:
        for family in EVAL_FAMILIES:
            for sample in heldout(family, PER_FAMILY):
                messages = list(sample.messages[:-1])
                prompt = format_prompt(messages)
                ids = tokenizer.encode_prompt(prompt)
                if len(ids) + MAX_NEW > WINDOW:
                    continue
                ours = answer_tokens(
                    prompt, local.chat(messages, temperature=0.0, max_tokens=MAX_NEW).text
                )
                theirs = engine.chat(messages, temperature=0.0, max_tokens=MAX_NEW).text
                server.append(Pair(family, prompt, ours, answer_tokens(prompt, theirs)))
                by_ids.append(Pair(family, prompt, ours, greedy_ids(ids)))
    finally:
        engine.close()
        local.close()
        library.close()

    assert len(server) >= 40 and len({p.family for p in server}) >= 10, "the prompt set shrank"
    server_agree, server_exact, server_report = summary("llama.cpp server, raw mode", server)
    ids_agree, ids_exact, ids_report = summary("llama.cpp library, same token ids", by_ids)
    print(server_report, ids_report, sep="\n")
    assert server_agree >= MIN_SERVER_AGREE and server_exact >= MIN_SERVER_EXACT, server_report
    assert ids_agree >= MIN_IDS_AGREE and ids_exact >= MIN_IDS_EXACT, ids_report
