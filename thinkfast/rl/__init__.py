"""Reasoning RL: GRPO with verifiable math rewards and rollouts from our own engine (docs/rl.md)."""
