"""Speed benchmarks (kernel-level and end-to-end generation)."""
