"""Triton GPU kernels (each module testable on CPU with TRITON_INTERPRET=1)."""
