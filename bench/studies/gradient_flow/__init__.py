"""Gradient flow: per-layer gradient norms of plain and residual CIFAR nets, at initialisation and after
steps (`python -m bench gradient-flow`), run in the profiling engines' workers."""
