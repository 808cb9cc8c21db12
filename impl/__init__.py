"""PyTorch implementation of everything the Machine Perception notes describe, one module per section.

Every public function takes tensors on any device, never moves them behind the caller's back,
is batched, and rejects bad input with a ``ValueError``/``TypeError`` naming the argument.
"""
