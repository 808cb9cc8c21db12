"""The notes' attention formula against torch's fused scaled_dot_product_attention:
causal self-attention, batch 1, D = 64 split into 8 heads, T = 256, 1024 (and 4096 outside quick mode).

Two kernels per size: the plain formula (groups ``attention.sdpa-T*``) and the chunked fast path
beside it (groups ``attention.chunked-T*``), each against the fused kernel timed in its group."""

import pytest
import torch

from impl.attention import (scaled_dot_product_attention, scaled_dot_product_attention_chunked,
                            scaled_dot_product_attention_fused)

HEADS, D = 8, 64


def _qkv(T):
    g = torch.Generator().manual_seed(T)
    return [torch.randn(1, HEADS, T, D // HEADS, generator=g) for _ in range(3)]


def _time(measure, quick, fn, T, role, group="sdpa"):
    if quick and T > 1024:
        pytest.skip("T = 4096 only outside quick mode")
    # T = 4096 takes seconds per call: fixed rounds instead of calibration.
    measure(fn, *_qkv(T), kwargs={"causal": True}, group=f"attention.{group}-T{T}", role=role,
            rounds=3 if T > 1024 else None, size=T, sweep=f"attention.{group}")


@pytest.mark.parametrize("T", [256, 1024, 4096])
def test_attention_fused_sdpa(measure, quick, T):
    _time(measure, quick, scaled_dot_product_attention_fused, T, "reference")


@pytest.mark.parametrize("T", [256, 1024, 4096])
def test_attention_notes_formula(measure, quick, T):
    _time(measure, quick, scaled_dot_product_attention, T, "kernel")


@pytest.mark.parametrize("T", [256, 1024, 4096])
def test_attention_fused_sdpa_beside_chunked(measure, quick, T):
    _time(measure, quick, scaled_dot_product_attention_fused, T, "reference", group="chunked")


@pytest.mark.parametrize("T", [256, 1024, 4096])
def test_attention_chunked_fast_path(measure, quick, T):
    _time(measure, quick, scaled_dot_product_attention_chunked, T, "kernel", group="chunked")
