"""Factories for the CLI tests: ``tests/models/demo_factory.py:make`` etc."""
import torch

from core.models.demo import demo_model


def make():
    return demo_model()


def inputs():
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)


def broken():
    raise RuntimeError("factory exploded on purpose")


def not_a_model():
    return 42
