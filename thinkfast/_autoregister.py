"""Make `AutoModelForCausalLM.from_pretrained(student_dir)` work after a plain `import thinkfast`.

The student classes register themselves with transformers' Auto* mappings when
`thinkfast.models` is imported, but importing it (torch, transformers, the model code) would
make `import thinkfast` (and so every CLI call) take seconds.  So `import thinkfast` only installs
a one-shot import hook: when transformers' `models.auto.modeling_auto` has been loaded (the
moment anyone can ask AutoModelForCausalLM for a model), `thinkfast.models` is imported and
registers.  If that module is already loaded, registration happens at once.  A failure to register
is a warning, never an error inside someone else's import.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
import warnings

TARGET = "transformers.models.auto.modeling_auto"


def register_now() -> None:
    try:
        import thinkfast.models  # noqa: F401  (registers the config and model classes on import)
    except Exception as err:  # noqa: BLE001
        warnings.warn(f"thinkfast: could not register the student model classes with transformers: {err}",
                      stacklevel=2)


class _Hook(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        uninstall()  # one shot
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module, _run=run):
            _run(module)
            register_now()

        loader.exec_module = exec_module
        return spec


_HOOK = _Hook()


def uninstall() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)


def install() -> None:
    if TARGET in sys.modules:
        register_now()
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)
