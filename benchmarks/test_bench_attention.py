"""The notes' attention formula against torch's fused scaled_dot_product_attention:
causal self-attention, batch 1, D = 64 split into 8 heads, T = 256, 1024 (and 4096 outside quick mode)."""

import pytest
import torch

from impl.attention import scaled_dot_product_attention, scaled_dot_product_attention_fused

HEADS, D = 8, 64


def _qkv(T):
    g = torch.Generator().manual_seed(T)
    return [torch.randn(1, HEADS, T, D // HEADS, generator=g) for _ in range(3)]


def _run(benchmark, quick, fn, T, role):
    if quick and T > 1024:
        pytest.skip("T = 4096 only outside quick mode")
    benchmark.group = f"attention.sdpa-T{T}"
    benchmark.extra_info.update(role=role, size=T, sweep="attention.causal")
    q, k, v = _qkv(T)
    if quick or T > 1024:
        benchmark.pedantic(fn, args=(q, k, v), kwargs={"causal": True}, rounds=3, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn, q, k, v, causal=True)


@pytest.mark.parametrize("T", [256, 1024, 4096])
def test_attention_fused_sdpa(benchmark, quick, T):
    _run(benchmark, quick, scaled_dot_product_attention_fused, T, "reference")


@pytest.mark.parametrize("T", [256, 1024, 4096])
def test_attention_notes_formula(benchmark, quick, T):
    _run(benchmark, quick, scaled_dot_product_attention, T, "kernel")
