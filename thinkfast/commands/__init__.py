"""Sub-commands of the `thinkfast` CLI, one module each (see thinkfast.cli)."""
