"""Errors shared by the data package and the models (the one module both may import)."""
from __future__ import annotations

__all__ = ["JetInputError"]


class JetInputError(ValueError):
    """A bad argument (an array's rank, shape or dtype, or a parameter out of range); the message
    names the argument."""
