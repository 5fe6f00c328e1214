"""Benchmarks behind `thinkfast bench ...`."""
