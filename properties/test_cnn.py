import pytest
import torch

@pytest.mark.claim("cnn.output-size")
def test_tmp(device):
    assert torch.zeros(1, device=device).shape == (1,)
