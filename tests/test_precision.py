"""precision=auto, the bf16 path (autocast + explicit-matmul attention on CPU), compile, and the
training step on every available device."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
import yaml

from conftest import DEVICES
from loopkit import config, precision
from loopkit.config import ConfigError, ModelConfig
from loopkit.model import LoopedTransformer, attention
from loopkit.train import ddp_needs_unused_parameters, pick_precision, train

TINY = [
    "task.train_length=8", "task.eval_lengths=[8, 16]", "task.eval_samples=32",
    "model.width=16", "model.heads=2", "model.window=1", "model.causal=true",
    "train.max_iters=6", "train.batch_size=16", "train.warmup_steps=3", "train.threads=1",
    "train.log_every=2", "train.eval_every=0", "train.ckpt_every=5", "eval.max_iters=8",
]


def test_auto_picks_bf16_only_where_it_is_native(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision.resolve("auto", cpu)[0] == "bf16"
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    choice, why = precision.resolve("auto", cpu)
    assert choice == "fp32" and "no avx512_bf16" in why
    assert precision.resolve("bf16", cpu) == ("bf16", "as configured")  # an explicit choice is obeyed
    with pytest.raises(ConfigError, match="train.precision: 'fp16' is not allowed; choose one of auto, fp32, bf16"):
        config.load(None, ["train.precision=fp16"])


@pytest.mark.parametrize("local", [False, True])
def test_bf16_cpu_attention_matches_fused_fp32_attention(local):
    """The explicit-matmul kernel used for bf16 on CPU computes the same attention as SDPA,
    masked (-inf) keys included, within bf16 rounding."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16, 8, generator=g) for _ in range(3))
    bias = torch.randn(3, 16, 16, generator=g)
    if local:
        offset = torch.arange(16)[None, :] - torch.arange(16)[:, None]
        bias = bias.masked_fill((offset > 0) | (offset < -2), float("-inf"))
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    got = attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), bias)
    assert got.dtype == torch.bfloat16
    assert (got.float() - want).abs().max() < 3e-2
    assert torch.equal(attention(q, k, v, bias), want)  # fp32 stays on SDPA


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kw", [dict(window=2, causal=True), dict(window=0, position="learned")])
def test_bf16_forward_and_backward_track_fp32(device, kw):
    torch.manual_seed(0)
    model = LoopedTransformer(ModelConfig(width=32, heads=4, **kw), 5, 3).to(device)
    x = torch.randint(0, 5, (4, 12), device=device)
    ref = model(x, 6).logits
    with precision.autocast(torch.device(device), "bf16"):
        out = model(x, 6).logits
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
    out.float().square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize("device", DEVICES)
def test_training_runs_on_every_device_and_records_its_precision(tmp_path, device, monkeypatch):
    cfg = config.load(None, TINY + ["train.steps=5", f"train.device={device}"])
    train(cfg, tmp_path / "run", progress=False)
    stored = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["precision"]
    assert stored == precision.resolve("auto", torch.device(device))[0]
    # resumed under `auto` on a machine that would now choose otherwise: the run keeps its format
    flipped = "fp32" if stored == "bf16" else "bf16"
    monkeypatch.setattr(precision, "resolve", lambda requested, dev: (flipped, "pretend"))
    assert pick_precision(cfg.train, torch.device(device), tmp_path / "run", resume=True)[0] == stored


def test_compiled_block_trains_and_keeps_checkpoint_names(tmp_path):
    base = config.load(None, TINY + ["train.steps=5"])
    train(base, tmp_path / "eager", progress=False)
    compiled = dataclasses.replace(base, train=dataclasses.replace(base.train, compile="default"))
    train(compiled, tmp_path / "compiled", progress=False)
    from safetensors.torch import load_file

    from loopkit import checkpoint

    eager_w = load_file(checkpoint.latest(tmp_path / "eager") / "model.safetensors")
    comp_w = load_file(checkpoint.latest(tmp_path / "compiled") / "model.safetensors")
    assert sorted(eager_w) == sorted(comp_w)
    for name in eager_w:  # same start, same batches: the compiled step learns the same weights
        assert torch.allclose(eager_w[name], comp_w[name], atol=2e-2), name


def test_ddp_searches_for_unused_parameters_only_when_a_step_can_leave_one():
    assert ddp_needs_unused_parameters(config.load(None, ["model.recall=none"]))
    assert ddp_needs_unused_parameters(config.load(None, ["model.recall=none", "train.alpha=0", "train.bptt=4"]))
    assert not ddp_needs_unused_parameters(config.load(None, ["model.recall=none", "train.alpha=0"]))
    assert not ddp_needs_unused_parameters(config.load(None, ["model.recall=standard"]))
    untied = ["model.tied=false", "train.alpha=0", "train.max_iters=4"]
    assert ddp_needs_unused_parameters(config.load(None, untied + ["train.bptt=2"]))
    assert not ddp_needs_unused_parameters(config.load(None, untied))


def test_a_device_that_is_not_there_is_refused_before_the_run_folder_exists(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    cfg = config.load(None, TINY + ["train.steps=2", "train.device=cuda"])
    with pytest.raises(ConfigError, match="no CUDA GPU is available"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
