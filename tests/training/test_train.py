"""The training script of the bundled model: schedule, curriculum, checkpoints and resume."""

from __future__ import annotations

import shutil
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch

import training.train as train_module
from local_backend.config import PRESETS as MODEL_PRESETS
from training.data import MIX, MIX_FOCUS, MIX_LATE, MIX_STAGE2, MIX_STAGE3
from training.train import (
    PRESETS,
    Restart,
    ThreadTuner,
    TrainConfig,
    lr_at,
    mix_at,
    save_checkpoint,
    train,
)

TOKENIZER = Path(__file__).resolve().parents[2] / "local_backend" / "weights" / "tokenizer.model"


def test_the_full_recipe_trains_the_bundled_preset() -> None:
    bundled = MODEL_PRESETS["bundled"]
    trained = PRESETS["full"].model_config(bundled.vocab_size)
    assert trained == replace(bundled, dtype=trained.dtype)  # exported in float16


def test_learning_rate_warms_up_decays_and_restarts() -> None:
    cfg = PRESETS["full"]
    second, third = cfg.restarts
    assert lr_at(0, cfg) == pytest.approx(cfg.lr / cfg.warmup)
    assert lr_at(cfg.warmup, cfg) == pytest.approx(cfg.lr)
    floor = cfg.lr * cfg.min_lr_ratio
    assert lr_at(second.at - 1, cfg) == pytest.approx(floor, rel=1e-3)
    assert lr_at(second.at + second.warmup, cfg) == pytest.approx(second.lr)
    # each stage decays to the floor just before the next one warms up again
    assert lr_at(third.at - 1, cfg) == pytest.approx(floor, rel=1e-2)
    assert lr_at(third.at, cfg) == pytest.approx(third.lr / third.warmup)
    assert lr_at(third.at + third.warmup, cfg) == pytest.approx(third.lr)
    assert lr_at(cfg.steps - 1, cfg) == pytest.approx(floor, rel=1e-2)
    # stage one is the same schedule a single-stage run of that length has
    single = replace(cfg, steps=second.at, restarts=())
    assert all(lr_at(s, cfg) == lr_at(s, single) for s in range(0, second.at, 7))


def test_checkpoints_of_single_restart_runs_still_load() -> None:
    legacy = {
        **{k: v for k, v in vars(PRESETS["full"]).items() if k != "restarts"},
        "restart_at": 3000,
        "restart_lr": 1e-3,
        "restart_warmup": 50,
    }
    assert TrainConfig.from_dict(legacy).restarts == (Restart(3000, 1e-3, 50, "stage2"),)
    cfg = PRESETS["full"]
    assert TrainConfig.from_dict(asdict(cfg)) == cfg


def test_restarts_are_checked() -> None:
    with pytest.raises(ValueError, match="increasing"):
        TrainConfig(restarts=(Restart(500, 1e-3), Restart(300, 1e-3)))
    with pytest.raises(ValueError, match="unknown data mix 'stage9'"):
        TrainConfig(restarts=(Restart(500, 1e-3, mix="stage9"),))


def test_curriculum_phases() -> None:
    cfg = PRESETS["full"]
    steps = (0, 1079, 1080, 1749, 1750, 2999, 3000, 4999, 5000, 6499)
    phases = [mix_at(s, cfg) for s in steps]
    assert phases == [
        *(MIX, MIX, MIX_FOCUS, MIX_FOCUS, MIX_LATE, MIX_LATE),
        *(MIX_STAGE2, MIX_STAGE2, MIX_STAGE3, MIX_STAGE3),
    ]
    quick = PRESETS["quick"]
    assert mix_at(quick.steps - 1, quick) is MIX_LATE


def test_thread_tuner_follows_the_faster_setting() -> None:
    tuner = ThreadTuner([1, 2], probe=3, period=100)
    chosen = []
    for step in range(60):
        threads = tuner.threads()
        chosen.append(threads)
        fast = 2 if step < 30 else 1  # the machine gets busy half way
        tuner.record(1.0 if threads == fast else 3.0)
    assert chosen[10:30] == [2] * 20
    assert chosen[-10:] == [1] * 10


def test_checkpoint_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"step": 1})

    def dies_half_way(obj: object, handle: object) -> None:
        handle.write(b"partial")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, {"step": 2})
    assert torch.load(path, weights_only=True) == {"step": 1}


def _tiny(steps: int) -> TrainConfig:
    return TrainConfig(
        dim=32,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        hidden_dim=48,
        sliding_window=16,
        seq_len=48,
        batch_size=2,
        steps=steps,
        warmup=10,
        eval_every=1000,
        eval_n=1,
        ckpt_every=1,
    )


def _weights(run: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    return state


def test_resumed_run_matches_an_uninterrupted_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    for run in (straight, resumed):
        run.mkdir()
        shutil.copyfile(TOKENIZER, run / "tokenizer.model")
    train(_tiny(4), straight, device="cpu")

    real_save = train_module.save_checkpoint

    def killed_after_step_two(path: Path, state: dict[str, object]) -> None:
        real_save(path, state)
        if state["step"] == 2:
            raise KeyboardInterrupt  # the process dies right after its checkpoint

    monkeypatch.setattr(train_module, "save_checkpoint", killed_after_step_two)
    with pytest.raises(KeyboardInterrupt):
        train(_tiny(4), resumed, device="cpu")
    monkeypatch.undo()
    assert torch.load(resumed / "checkpoint.pt", weights_only=True)["step"] == 2
    final = train(_tiny(4), resumed, resume=True, device="cpu")
    for name, tensor in _weights(straight).items():
        torch.testing.assert_close(_weights(resumed)[name], tensor, rtol=1e-4, atol=1e-5)
    assert {p.name for p in final.iterdir()} == {
        "config.json",
        "model.safetensors",
        "tokenizer.model",
        "MANIFEST.json",
    }


def test_resume_refuses_a_different_model(tmp_path: Path) -> None:
    shutil.copyfile(TOKENIZER, tmp_path / "tokenizer.model")
    train(_tiny(1), tmp_path, device="cpu")
    with pytest.raises(SystemExit, match="different settings"):
        train(replace(_tiny(2), dim=64), tmp_path, resume=True, device="cpu")
    assert train_module.PRESETS["quick"].steps < train_module.PRESETS["full"].steps
