"""One config system: dataclasses, loadable from YAML files or dicts.

    @dataclass
    class TrainConfig:
        lr: float = 1e-5
        optim: OptimConfig = field(default_factory=OptimConfig)

    cfg = load_config(TrainConfig, "recipe.yaml", overrides=["lr=2e-5", "optim.betas=[0.9,0.95]"])

Unknown keys and wrongly typed values raise ThinkfastError naming the key, so a
typo in a YAML file fails before any work starts.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from thinkfast.errors import ThinkfastError

T = TypeVar("T")


def cache_dir() -> Path:
    """Where models, wheels and other downloads are cached (never inside the repo)."""
    root = os.environ.get("THINKFAST_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "thinkfast"))
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_search_dirs() -> list[Path]:
    """Where relative data paths are looked up after the working directory: $THINKFAST_DATA, then the
    public data folder beside the checkout (../shared/data, as `make run` uses)."""
    dirs = []
    if os.environ.get("THINKFAST_DATA"):
        dirs.append(Path(os.environ["THINKFAST_DATA"]).expanduser())
    dirs.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    return dirs


def find_data_path(path: str | os.PathLike, what: str = "data path") -> Path:
    """A data file or folder: `path` itself (with ~ and $VARS expanded) when it exists; a relative path
    that does not exist from the working directory is looked up by its file name in
    `data_search_dirs()`.  Raises a ThinkfastError naming every place it looked."""
    given = Path(os.path.expandvars(str(path))).expanduser()
    if given.exists():
        return given
    tried = [str(given)]
    if not given.is_absolute():
        for folder in data_search_dirs():
            candidate = folder / given.name
            if candidate.exists():
                return candidate
            tried.append(str(candidate))
    raise ThinkfastError(f"{what} {path} does not exist (looked for {', '.join(tried)}); set THINKFAST_DATA to the "
                         "folder holding it, or give the full path")


def looks_like_local_path(spec: str) -> bool:
    """A model spec meant as a local path rather than a hub id: it starts with ./ ../ / ~ (or is . / ..), has
    more than one `/` (a hub id is `name` or `org/name`), or names something inside a folder that exists
    here (`runs/hybrid` when ./runs exists)."""
    spec = str(spec)
    if spec in (".", "..") or spec.startswith(("./", "../", "/", "~", ".\\", "..\\")) or (len(spec) > 1 and spec[1] == ":"):
        return True
    if spec.count("/") >= 2:
        return True
    parent = Path(spec).expanduser().parent
    return str(parent) not in ("", ".") and parent.is_dir()


def check_local_model_path(spec: str | None, what: str = "model") -> None:
    """Refuse a missing local model path at once, instead of letting it be tried as a hub id."""
    if not spec or not looks_like_local_path(spec) or Path(spec).expanduser().exists():
        return
    if str(spec).endswith(".gguf"):
        raise ThinkfastError(f"{what} {spec}: GGUF file does not exist")
    raise ThinkfastError(f"{what} {spec}: no such directory")


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any or annotation is None:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ThinkfastError as err:
                errors.append(str(err))
        raise ThinkfastError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ThinkfastError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise ThinkfastError(f"{where}: expected a mapping for {annotation.__name__}, got {value!r}")
        return from_dict(annotation, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ThinkfastError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ThinkfastError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ThinkfastError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError as err:
            raise ThinkfastError(f"{where}: expected a number, got {value!r}") from err
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and not value.lstrip("-").isdigit()):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ThinkfastError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if annotation is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ThinkfastError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, (str, int, float)):
            raise ThinkfastError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass `cls` from a (nested) dict, checking keys and types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ThinkfastError(
            f"{where}: unknown key(s) {unknown} for {cls.__name__}; valid keys are {sorted(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ThinkfastError(f"{where}: {err}") from err
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate()
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass (nested) -> plain dict suitable for YAML/JSON."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _list_index(items: list, part: str, override: str, where: str) -> int:
    """A list entry by position (`students.0`, `-1` the last) or by its `name` (`students.hybrid`)."""
    if part.lstrip("-").isdigit():
        index = int(part)
        if not -len(items) <= index < len(items):
            raise ThinkfastError(f"override {override!r}: {where} has {len(items)} entries, no index {index}")
        return index % len(items)
    names = [item.get("name") for item in items if isinstance(item, dict)]
    if part in names:
        return names.index(part)
    if not items:
        raise ThinkfastError(f"override {override!r}: {where} is empty")
    raise ThinkfastError(f"override {override!r}: {where} has no entry named {part!r} (names: {names}); "
                         f"or use an index such as {where}.0")


def _apply_override(data: dict, override: str) -> None:
    """`a.b=v` sets a nested key; list entries are reached by index or by name: `students.0.train.max_steps=4`,
    `students.hybrid.train.max_steps=4`."""
    if "=" not in override:
        raise ThinkfastError(f"override {override!r} must look like key.sub=value")
    key, raw = override.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as err:
        raise ThinkfastError(f"override {override!r}: the value is not valid YAML ({' '.join(str(err).split())})") from None
    node: Any = data
    parts = key.split(".")
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the config"
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = _list_index(node, part, override, where)
            if last:
                node[index] = value
                return
            node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
                return
            node = node.setdefault(part, {})
        else:
            raise ThinkfastError(f"override {override!r}: {where} is not a mapping or a list")
        if not isinstance(node, (dict, list)):
            raise ThinkfastError(f"override {override!r}: {'.'.join(parts[:depth + 1])} is not a mapping or a list")


def shipped_config(name: str | os.PathLike, prefix: str = "") -> Path:
    """A YAML path, or the name of a config shipped in thinkfast/configs (`run_gpu_1b` -> .../run_gpu_1b.yaml)."""
    path = Path(name)
    if path.is_file():
        return path
    folder = Path(__file__).resolve().parent / "configs"
    stem = path.name[:-5] if path.name.endswith(".yaml") else path.name
    if (folder / f"{stem}.yaml").is_file():
        return folder / f"{stem}.yaml"
    available = sorted(p.stem for p in folder.glob(f"{prefix}*.yaml"))
    raise ThinkfastError(f"config {name} is neither a file nor a shipped config; shipped configs: {available}")


def load_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ThinkfastError(f"config file {path} does not exist")
    with open(path) as fh:
        try:
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as err:
            raise ThinkfastError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ThinkfastError(f"config file {path} must hold a mapping at the top level")
    return data


def load_config(cls: type[T], source: str | os.PathLike | dict | None = None, overrides: list[str] | None = None) -> T:
    """Load `cls` from a YAML path or dict, then apply `key.sub=value` overrides."""
    if source is None:
        data: dict = {}
    elif isinstance(source, dict):
        data = dict(source)
    else:
        data = load_yaml(source)
    for override in overrides or []:
        _apply_override(data, override)
    return from_dict(cls, data, where=str(source) if isinstance(source, (str, Path)) else cls.__name__)


def save_config(obj: Any, path: str | os.PathLike) -> None:
    from thinkfast.storage import atomic_file

    with atomic_file(path, "w") as fh:
        yaml.safe_dump(to_dict(obj), fh, sort_keys=False)
