"""``device=`` on load, the backend, the client and the CLI; CUDA tests run only with a GPU."""

from __future__ import annotations

import pytest
import torch

import local_backend
from bedrock_mistral import MistralClient
from bedrock_mistral.backends.local import LocalBackend
from bedrock_mistral.errors import BackendUnavailableError, ValidationError
from local_backend.device import resolve_device
from local_backend.errors import DeviceError
from tests.helpers.cli import run_cli
from tests.helpers.devices import requires_cuda

QUESTION = "<s>[INST] What is the capital of France? [/INST]"


def _answer(model: local_backend.LocalModel) -> list[int]:
    return model.generate(model.tokenizer.encode_prompt(QUESTION), max_new_tokens=8)


def test_cpu_loads_and_generates_on_the_cpu() -> None:
    model = local_backend.load(device="cpu")
    assert model.device == torch.device("cpu")
    assert model.dtype == torch.float32  # the CPU default of the bundled model, as before
    assert model.new_cache().layers[0].k.device.type == "cpu"
    assert model.tokenizer.decode(_answer(model)).strip() == "Paris"


def test_none_means_the_best_device_here() -> None:
    best = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == best
    assert local_backend.load().device.type == best


@pytest.mark.parametrize("device", ["tpu", "gpu", "cuda:x", 3.5])
def test_a_device_we_do_not_run_on_is_a_device_error(device: object) -> None:
    with pytest.raises(DeviceError, match="device="):
        local_backend.load(device=device)  # type: ignore[arg-type]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so() -> None:
    with pytest.raises(DeviceError, match="no CUDA GPU: use device='cpu'"):
        local_backend.load(device="cuda")


@requires_cuda
def test_quantised_weights_run_on_cuda_with_the_device_kernels() -> None:
    model = local_backend.load(device="cuda", quantize="int8")
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16
    assert set(model.quant_kernels()) == {"DeviceInt8Weight"}  # tests/local/test_quant_cuda.py
    assert model.new_cache().layers[0].k.device.type == "cuda"
    assert model.tokenizer.decode(_answer(model)).strip() == "Paris"


@requires_cuda
def test_cuda_defaults_to_bf16_and_keeps_everything_on_the_gpu() -> None:
    model = local_backend.load(device="cuda")
    assert model.device.type == "cuda" and model.dtype == torch.bfloat16
    cache = model.new_cache()
    assert cache.layers[0].k.device.type == "cuda"
    assert model.tokenizer.decode(_answer(model)).strip() == "Paris"
    ids = model.tokenizer.encode_prompt(QUESTION)
    sampled = model.generate(ids, max_new_tokens=8, temperature=0.7, seed=3)
    assert sampled == model.generate(ids, max_new_tokens=8, temperature=0.7, seed=3)


@requires_cuda
def test_cuda_float32_matches_the_cpu_greedily() -> None:
    gpu = local_backend.load(device="cuda", dtype="float32")
    cpu = local_backend.load(device="cpu")
    assert _answer(gpu) == _answer(cpu)
    assert gpu.route(QUESTION).experts == cpu.route(QUESTION).experts


# -- the SDK and the CLI ---------------------------------------------------------------------


def test_device_is_a_backend_option_and_its_own_shared_model() -> None:
    client = MistralClient(backend="local", device="cpu")
    backend = client.backend
    assert isinstance(backend, LocalBackend) and backend.device == "cpu"
    assert backend.model is LocalBackend(device="cpu").model
    assert backend.model.device.type == "cpu"
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    assert client.chat(messages, temperature=0, max_tokens=16).text.strip() == "Paris"


def test_an_invalid_device_is_refused_before_loading() -> None:
    with pytest.raises(ValidationError, match="device='tpu' is not allowed: cpu, cuda or cuda:N"):
        LocalBackend(device="tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_setup_error_with_a_fix() -> None:
    backend = LocalBackend(device="cuda")
    with pytest.raises(BackendUnavailableError) as caught:
        _ = backend.model
    assert "no CUDA GPU" in str(caught.value)
    assert "--device cpu" in caught.value.render("cli")


def test_the_cli_takes_device_as_a_flag_an_env_var_and_refuses_a_bad_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = run_cli("ask", "-b", "local", "--device", "cpu", "What is the capital of France?")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == "Paris"
    refused = run_cli("ask", "-b", "local", "--device", "tpu", "hi")
    assert refused.exit_code == 2
    assert "device='tpu' is not allowed: cpu, cuda or cuda:N" in refused.stderr
    monkeypatch.setenv("BEDROCK_MISTRAL_LOCAL_DEVICE", "npu")
    from_env = run_cli("ask", "-b", "local", "hi")
    assert from_env.exit_code == 2
    assert "device='npu' is not allowed" in from_env.stderr


def test_serve_refuses_a_bad_device_before_binding() -> None:
    refused = run_cli("serve", "--device", "tpu", "--port", "0")
    assert refused.exit_code == 2
    assert "device='tpu' is not allowed: cpu, cuda or cuda:N" in refused.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_serve_on_cuda_without_a_gpu_fails_instead_of_serving_echo() -> None:
    refused = run_cli("serve", "--device", "cuda", "--port", "0")
    assert refused.exit_code == 3, refused.output
    assert "no CUDA GPU" in refused.stderr and "--device cpu" in refused.stderr
