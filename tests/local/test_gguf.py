"""GGUF files: block decoding against gguf-py's reference dequantiser, whole models written as
llama.cpp's converter writes them (q/k permutation, merged experts) against the same checkpoint
loaded from safetensors, the tokenizer from the metadata, Ollama's store, and bad files."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch", reason="needs the local extra: pip install -e '.[local]'")
gguf = pytest.importorskip("gguf", reason="needs the dev extra (gguf writes the test files)")

import numpy as np  # noqa: E402
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf import quants  # noqa: E402

import local_backend  # noqa: E402
from local_backend.checkpoint import to_hf_state_dict  # noqa: E402
from local_backend.config import ModelConfig, MoeConfig  # noqa: E402
from local_backend.errors import (  # noqa: E402
    CheckpointError,
    CheckpointNotFoundError,
    GGUFFormatError,
    UnsupportedArchitectureError,
    UnsupportedBlockTypeError,
)
from local_backend.gguf_blocks import BLOCK_TYPES, decode, int4_codes  # noqa: E402
from local_backend.gguf_file import GGUFFile  # noqa: E402
from local_backend.gguf_tokenizer import tokenizer_from_metadata  # noqa: E402
from local_backend.model import Transformer  # noqa: E402
from local_backend.quant import QuantizedLinear  # noqa: E402
from local_backend.runtime import LocalModel  # noqa: E402
from tests.helpers.checkpoints import CASES, _hf_tensors, build_reference  # noqa: E402
from tests.helpers.gguf_files import (  # noqa: E402
    converter_type,
    gguf_arrays,
    ollama_store,
    random_blocks,
    v1_tokenizer_metadata,
    write_gguf,
)

QUANT_TYPES = ["Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"]


def _prompts(vocab: int, n: int = 6, length: int = 12) -> list[list[int]]:
    gen = torch.Generator().manual_seed(7)
    return [torch.randint(3, vocab, (length,), generator=gen).tolist() for _ in range(n)]


def _logits(model: LocalModel, prompts: list[list[int]]) -> Any:
    return torch.stack([model.forward(ids)[0] for ids in prompts])


def _cosine(a: Any, b: Any) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


# -- blocks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", QUANT_TYPES)
def test_blocks_decode_exactly_as_gguf_py(name: str) -> None:
    qt = QT[name]
    blocks = random_blocks((5, 512), qt, seed=3)
    want = quants.dequantize(blocks, qt)
    t = BLOCK_TYPES[int(qt)]
    got = decode(blocks, t)
    assert got.shape == (5, 512)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)  # same formulas, same order
    if name in ("Q4_0", "Q4_1", "Q4_K"):  # the kept 4-bit codes stand for the same values
        codes, scale, zero = int4_codes(blocks, t)
        assert codes.max() <= 15 and scale.shape == (5, 16)
        again = (codes.reshape(5, 16, 32) - 8.0) * scale[..., None] + zero[..., None]
        np.testing.assert_allclose(again.reshape(5, 512), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["F16", "BF16"])
def test_half_precision_rows_decode(name: str) -> None:
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    qt = QT[name]
    raw = quants.quantize(x, qt) if name == "BF16" else x.astype(np.float16).view(np.uint8)
    got = decode(np.ascontiguousarray(raw), BLOCK_TYPES[int(qt)])
    np.testing.assert_array_equal(
        got,
        quants.dequantize(raw, qt) if name == "BF16" else x.astype(np.float16).astype(np.float32),
    )


# -- whole models, as llama.cpp's converter writes them ------------------------------------


@pytest.fixture(scope="module")
def references(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Per case: the safetensors folder, its config, its tensors in llama.cpp's layout, and
    our model loaded from safetensors (the reference)."""
    out = {}
    for case in CASES:
        path = tmp_path_factory.mktemp(case.name)
        ref = build_reference(case, path)
        config = ModelConfig.from_hf_dict(json.loads((path / "config.json").read_text()))
        hf = _hf_tensors(ref)
        out[case.name] = {
            "path": path,
            "config": config,
            "hf": hf,
            "arrays": gguf_arrays(hf, config),
            "model": local_backend.load(path, dtype="float32"),
        }
    return out


CASE_NAMES = [c.name for c in CASES]


@pytest.mark.parametrize("kind", ["F32", "F16", "BF16"])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_float_gguf_matches_safetensors(
    case: str, kind: str, references: dict[str, Any], tmp_path: Path
) -> None:
    r = references[case]
    file = write_gguf(tmp_path / "m.gguf", r["config"], r["arrays"], kind)
    model = local_backend.load(file, dtype="float32")
    assert model.config.sliding_window == r["config"].sliding_window
    assert model.config.tie_embeddings == r["config"].tie_embeddings
    prompts = _prompts(r["config"].vocab_size)
    got, want = _logits(model, prompts), _logits(r["model"], prompts)
    tol = {"F32": 1e-5, "F16": 2e-3, "BF16": 2e-2}[kind]
    torch.testing.assert_close(got, want, atol=tol, rtol=0)


def test_default_dtype_is_float32_for_f32_files_and_bfloat16_otherwise(
    references: dict[str, Any], tmp_path: Path
) -> None:
    r = references["mixtral-gqa-window"]
    f32 = write_gguf(tmp_path / "a.gguf", r["config"], r["arrays"], "F32")
    q8 = write_gguf(tmp_path / "b.gguf", r["config"], r["arrays"], "Q8_0")
    assert local_backend.load(f32).dtype == torch.float32
    assert local_backend.load(q8).dtype == torch.bfloat16
    assert local_backend.load(q8, "float32").dtype == torch.float32  # the faster decode


def test_per_expert_tensors_of_older_files_load(references: dict[str, Any], tmp_path: Path) -> None:
    r = references["mixtral-gqa-window"]
    arrays = gguf_arrays(r["hf"], r["config"], merged=False)
    assert "blk.0.ffn_gate.3.weight" in arrays
    model = local_backend.load(write_gguf(tmp_path / "m.gguf", r["config"], arrays), "float32")
    prompts = _prompts(r["config"].vocab_size)
    torch.testing.assert_close(
        _logits(model, prompts), _logits(r["model"], prompts), atol=1e-5, rtol=0
    )


def _format_reference(arrays: dict[str, np.ndarray], kinds: dict[str, str]) -> dict[str, Any]:
    """The arrays as the quantised file holds them, dequantised by gguf-py (exact values)."""
    out = {}
    for name, a in arrays.items():
        qt = converter_type(name, a, kinds[name])
        out[name] = a if qt in (QT.F32, QT.F16) else quants.dequantize(quants.quantize(a, qt), qt)
    return out


@pytest.mark.parametrize("kind", ["Q8_0", "Q4_0", "Q4_1"])
@pytest.mark.parametrize("case", CASE_NAMES)
def test_quantised_gguf_matches_safetensors(
    case: str, kind: str, references: dict[str, Any], tmp_path: Path
) -> None:
    """Two measures: against the file's exact values (gguf-py's dequantisation, written as
    F32: our conversion's own error), and against the float32 checkpoint (the format's error
    too). Q4_x files keep the head in Q8_0, as llama-quantize keeps it at higher precision."""
    r = references[case]
    kinds = dict.fromkeys(r["arrays"], kind)
    if kind != "Q8_0":
        kinds["output.weight" if not r["config"].tie_embeddings else "token_embd.weight"] = "Q8_0"
    model = local_backend.load(
        write_gguf(tmp_path / "q.gguf", r["config"], r["arrays"], kinds), "float32"
    )
    exact = write_gguf(tmp_path / "x.gguf", r["config"], _format_reference(r["arrays"], kinds))
    prompts = _prompts(r["config"].vocab_size)
    got = _logits(model, prompts)
    file_values = _logits(local_backend.load(exact, "float32"), prompts)
    fp32 = _logits(r["model"], prompts)
    # Q8_0 is re-quantised per channel; the 4-bit codes are kept (scales rounded to bf16);
    # both kernels take bf16 activations
    assert _cosine(got, file_values) >= (0.9995 if kind == "Q8_0" else 0.9999)
    if kind == "Q8_0":
        torch.testing.assert_close(got, fp32, atol=3e-2, rtol=0)
        assert _cosine(got, fp32) >= 0.9995
    else:  # Q4_0's own rounding (absmax to -8) costs ~0.01 of cosine on 64-wide random weights
        assert _cosine(got, fp32) >= 0.98
        assert _cosine(file_values, fp32) - _cosine(got, fp32) < 1e-3


def test_q4_0_keeps_codes_as_int4_and_q8_0_becomes_int8(
    references: dict[str, Any], tmp_path: Path
) -> None:
    r = references["mixtral-gqa-window"]
    kinds = dict.fromkeys(r["arrays"], "Q4_0") | {"blk.0.attn_v.weight": "Q8_0"}
    model = local_backend.load(write_gguf(tmp_path / "m.gguf", r["config"], r["arrays"], kinds))
    layer0, layer1 = model.model.blocks[0], model.model.blocks[1]
    ff = layer1.feed_forward
    assert isinstance(layer1.attention.wqkv, QuantizedLinear)
    assert {w.scheme for w in ff.w13} == {"int4"}  # type: ignore[attr-defined]
    assert ff.w13[0].group_size == 32  # type: ignore[attr-defined]
    # layer 0 mixes Q4_0 (q, k) and Q8_0 (v) in one fused matrix: int8 for all of it
    assert layer0.attention.wqkv.weight.scheme == "int8"
    assert layer1.attention.wqkv.weight.scheme == "int4"


# K-quants need rows of 256 values; gguf-py cannot encode them, so the file holds random
# well-formed blocks and the reference is gguf-py's dequantisation of those same blocks.
K_CONFIG = ModelConfig(
    dim=256,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    hidden_dim=256,
    vocab_size=64,
    moe=MoeConfig(num_experts=2, num_experts_per_tok=1),
    rope_theta=10000.0,
)
# A Q4_K_M-like mix: Q6_K for v, the head and one ffn_down; Q5_K for the other.
K_TYPES = {
    "attn_q": QT.Q4_K,
    "attn_k": QT.Q4_K,
    "attn_v": QT.Q6_K,
    "attn_output": QT.Q4_K,
    "ffn_gate_exps": QT.Q4_K,
    "ffn_up_exps": QT.Q4_K,
    "token_embd": QT.Q4_K,
    "output": QT.Q6_K,
}


def test_k_quant_mix_loads_within_conversion_error(tmp_path: Path) -> None:
    torch.manual_seed(0)
    arrays = gguf_arrays(to_hf_state_dict(Transformer(K_CONFIG)), K_CONFIG)
    raw, exact = {}, {}
    for i, (name, a) in enumerate(arrays.items()):
        parts = name.split(".")
        kind = parts[2] if name.startswith("blk.") else parts[0]
        qt = K_TYPES.get(kind)
        if kind == "ffn_down_exps":
            qt = QT.Q6_K if name.startswith("blk.0.") else QT.Q5_K
        if qt is None:
            exact[name] = a
            continue
        blocks = random_blocks(a.shape, qt, seed=i)
        raw[name] = (blocks, qt)
        exact[name] = quants.dequantize(blocks, qt)
    plain = {n: a for n, a in exact.items() if n not in raw}
    qfile = write_gguf(tmp_path / "k.gguf", K_CONFIG, plain, raw=raw)
    xfile = write_gguf(tmp_path / "x.gguf", K_CONFIG, exact)
    assert {t.type_name for t in GGUFFile(qfile).tensors.values()} == {
        "F32",
        "Q4_K",
        "Q5_K",
        "Q6_K",
    }
    model, reference = local_backend.load(qfile, "float32"), local_backend.load(xfile, "float32")
    prompts = _prompts(K_CONFIG.vocab_size)
    got, want = _logits(model, prompts), _logits(reference, prompts)
    assert _cosine(got, want) >= 0.999
    ff = model.model.blocks[0].feed_forward
    assert ff.w13[0].scheme == "int4"  # type: ignore[attr-defined]
    assert ff.w2[0].scheme == "int8"  # type: ignore[attr-defined]


# -- tokenizer ------------------------------------------------------------------------------

TEXTS = [
    "Hello, world!",
    "  leading and   inner   spaces  ",
    "code:\n\tprint(1)\r\n",
    "naïve café — 東京 😀 \u0000\u0007",
    "12345 3.14159 -0.5e10",
    "[INST] typed markers [/INST] <s> </s>",
    "Mixtral-8x7B-Instruct-v0.1's GGUF",
    "",
]


def test_tokenizer_from_metadata_encodes_as_mistral_common_v1(tmp_path: Path) -> None:
    from mistral_common.tokens.tokenizers.mistral import MistralTokenizer

    config = ModelConfig(dim=32, n_layers=1, n_heads=4, hidden_dim=32, vocab_size=32000)
    file = write_gguf(tmp_path / "t.gguf", config, {}, tokenizer=v1_tokenizer_metadata())
    meta = GGUFFile(file).metadata
    assert meta["tokenizer.ggml.model"] == "llama" and len(meta["tokenizer.ggml.tokens"]) == 32000
    ours = tokenizer_from_metadata(meta, str(file))
    reference = MistralTokenizer.v1().instruct_tokenizer.tokenizer
    for text in TEXTS:
        want = reference.encode(text, bos=False, eos=False)
        assert ours.encode(text) == want, text
        assert ours.decode(want) == reference.decode(want)
    assert ours.encode_prompt("<s> [INST] Hi [/INST]")[:1] == [1]


# -- Ollama's store -------------------------------------------------------------------------


def test_ollama_reference_loads_the_model_blob(
    references: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = references["mistral-nowindow-headdim"]
    file = write_gguf(tmp_path / "m.gguf", r["config"], r["arrays"], "F32")
    ollama_store(tmp_path / "store", file, "tiny", "q8")
    monkeypatch.setenv("OLLAMA_MODELS", str(tmp_path / "store"))
    model = local_backend.load("ollama:tiny:q8", dtype="float32")
    prompts = _prompts(r["config"].vocab_size, n=2)
    torch.testing.assert_close(
        _logits(model, prompts), _logits(r["model"], prompts), atol=1e-5, rtol=0
    )
    with pytest.raises(CheckpointNotFoundError, match=r"no model mistral:latest.*tiny:q8"):
        local_backend.load("ollama:mistral")


# -- bad files ------------------------------------------------------------------------------


@pytest.fixture
def good_file(references: dict[str, Any], tmp_path: Path) -> Path:
    r = references["mixtral-gqa-window"]
    return write_gguf(tmp_path / "good.gguf", r["config"], r["arrays"], "Q8_0")


def test_bad_magic_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGML" + bytes(64))
    with pytest.raises(GGUFFormatError, match=r"not a GGUF file.*GGML"):
        local_backend.load(bad)


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.999])
def test_truncated_file_fails_before_loading(good_file: Path, tmp_path: Path, keep: float) -> None:
    data = good_file.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(GGUFFormatError, match="truncated or corrupt"):
        local_backend.load(cut)


def test_old_version_is_named(good_file: Path, tmp_path: Path) -> None:
    data = bytearray(good_file.read_bytes())
    data[4:8] = (1).to_bytes(4, "little")
    (tmp_path / "v1.gguf").write_bytes(bytes(data))
    with pytest.raises(GGUFFormatError, match="version 1"):
        local_backend.load(tmp_path / "v1.gguf")


def test_other_architecture_is_named(references: dict[str, Any], tmp_path: Path) -> None:
    r = references["mixtral-gqa-window"]
    file = write_gguf(tmp_path / "q.gguf", r["config"], r["arrays"], arch="qwen2")
    with pytest.raises(UnsupportedArchitectureError, match="'qwen2'"):
        local_backend.load(file)


def test_unsupported_block_type_names_tensor_type_and_supported(
    references: dict[str, Any], tmp_path: Path
) -> None:
    r = references["mixtral-gqa-window"]
    kinds = dict.fromkeys(r["arrays"], "F32") | {"blk.1.attn_output.weight": "Q5_0"}
    file = write_gguf(tmp_path / "q.gguf", r["config"], r["arrays"], kinds)
    with pytest.raises(UnsupportedBlockTypeError) as info:
        local_backend.load(file)
    assert info.value.tensor == "blk.1.attn_output.weight" and info.value.block_type == "Q5_0"
    assert "Q4_K" in str(info.value) and "Q6_K" in str(info.value)


@pytest.mark.parametrize(
    ("metadata", "match"),
    [
        ({"llama.rope.scaling.type": ("linear", gguf.GGUFValueType.STRING)}, "rope scaling"),
        ({"llama.rope.dimension_count": (4, gguf.GGUFValueType.UINT32)}, "rotates part"),
        ({"llama.attention.value_length": (4, gguf.GGUFValueType.UINT32)}, "head sizes differ"),
    ],
)
def test_hyperparameters_our_model_cannot_express(
    references: dict[str, Any], tmp_path: Path, metadata: dict[str, Any], match: str
) -> None:
    r = references["mixtral-gqa-window"]
    file = write_gguf(tmp_path / "h.gguf", r["config"], r["arrays"], metadata=metadata)
    with pytest.raises(CheckpointError, match=match):
        local_backend.load(file)


def test_heads_not_a_multiple_of_kv_heads(references: dict[str, Any], tmp_path: Path) -> None:
    r = references["mixtral-gqa-window"]
    odd = copy.copy(r["config"])
    odd.n_kv_heads = 3  # set after validation: the writer only reads the fields
    file = write_gguf(tmp_path / "h.gguf", odd, r["arrays"])
    with pytest.raises(CheckpointError, match=r"cannot run these hyperparameters.*multiple"):
        local_backend.load(file)


def test_missing_tensor_is_named(references: dict[str, Any], tmp_path: Path) -> None:
    r = references["mixtral-gqa-window"]
    arrays = {k: v for k, v in r["arrays"].items() if k != "blk.1.ffn_up_exps.weight"}
    with pytest.raises(CheckpointError, match=r"blk\.1\.ffn_up_exps\.weight is missing"):
        local_backend.load(write_gguf(tmp_path / "m.gguf", r["config"], arrays))


def test_float_gguf_can_be_quantised_while_loading(
    references: dict[str, Any], tmp_path: Path
) -> None:
    r = references["mixtral-gqa-window"]
    file = write_gguf(tmp_path / "m.gguf", r["config"], r["arrays"], "F16")
    model = local_backend.load(file, "float32", quantize="int4", group_size=32)
    assert model.model.blocks[0].attention.wqkv.weight.scheme == "int4"
    prompts = _prompts(r["config"].vocab_size)
    assert _cosine(_logits(model, prompts), _logits(r["model"], prompts)) >= 0.98


def test_missing_gguf_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        local_backend.load(tmp_path / "nothing.gguf")
