"""Activation functions of the notes' table (ML, "Activation functions") and their derivatives.

Each function takes a floating tensor of any shape and works elementwise on its device. The
``*_formula`` functions write the table's f(x) literally (in a form that cannot overflow); the
plain names use PyTorch's fused kernels, and the tests hold one against the other.
"""

from __future__ import annotations

import torch

from impl._checks import check_tensor


def sigmoid_formula(x: torch.Tensor) -> torch.Tensor:
    """sigma(x) = 1 / (1 + e^{-x}), computed from e^{-|x|} so no exp overflows. x: any shape."""
    check_tensor(x, "x")
    e = torch.exp(-x.abs())  # in (0, 1]: never overflows
    return torch.where(x >= 0, 1 / (1 + e), e / (1 + e))


def tanh_formula(x: torch.Tensor) -> torch.Tensor:
    """tanh(x) = (e^x - e^{-x}) / (e^x + e^{-x}) = sign(x) (1 - e^{-2|x|}) / (1 + e^{-2|x|})."""
    check_tensor(x, "x")
    e = torch.exp(-2 * x.abs())
    # 1 - e^{-2|x|} as -expm1(-2|x|): no cancellation for small |x|, where tanh(x) ~ x
    return torch.sign(x) * -torch.expm1(-2 * x.abs()) / (1 + e)


def relu_formula(x: torch.Tensor) -> torch.Tensor:
    """max(0, x). x: any shape."""
    check_tensor(x, "x")
    return x.clamp_min(0)  # max(0, x), NaN in -> NaN out


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Fused sigmoid. x: any shape."""
    check_tensor(x, "x")
    return torch.sigmoid(x)


def tanh(x: torch.Tensor) -> torch.Tensor:
    """Fused tanh. x: any shape."""
    check_tensor(x, "x")
    return torch.tanh(x)


def relu(x: torch.Tensor) -> torch.Tensor:
    """Fused ReLU. x: any shape."""
    check_tensor(x, "x")
    return torch.relu(x)


def sigmoid_derivative(x: torch.Tensor) -> torch.Tensor:
    """The table's f'(x) = sigma(x) (1 - sigma(x)). x: any shape."""
    check_tensor(x, "x")
    # 1 - sigma(x) = sigma(-x): the same value without the cancellation of 1 - sigma at large x
    return torch.sigmoid(x) * torch.sigmoid(-x)


def tanh_derivative(x: torch.Tensor) -> torch.Tensor:
    """The table's f'(x) = 1 - tanh(x)^2. x: any shape."""
    check_tensor(x, "x")
    # 1 - tanh^2 = cosh^-2: the same value without the cancellation of 1 - tanh^2 at large |x|
    return torch.cosh(x).pow(-2)


def relu_derivative(x: torch.Tensor) -> torch.Tensor:
    """The table's f'(x) = [x >= 0]: at 0 it takes 1, the right derivative (autograd takes 0)."""
    check_tensor(x, "x")
    return (x >= 0).to(x.dtype)


ACTIVATIONS = {
    "sigmoid": (sigmoid, sigmoid_derivative),
    "tanh": (tanh, tanh_derivative),
    "relu": (relu, relu_derivative),
}
