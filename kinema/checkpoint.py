"""Checkpoint folders laid out as diffusers lays them out, read without running their code.

    folder/
      model_index.json            {"_kinema_version": ..., "components": {"tokenizer": "CViViT"}, ...extra}
      tokenizer/
        config.json               the component's dataclass config + "_class_name"
        model.safetensors         its weights

A checkpoint names classes only by string; `load_component` maps the string to a class
through the explicit `REGISTRY` (filled by `register`), never by importing a module the
checkpoint names, and weights are read with safetensors only: never pickle, never torch.load.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import CheckpointError  # defined apart so the CLI can catch it without torch; imported from here as before
from .fsutil import atomic_dir

MODEL_INDEX = "model_index.json"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


# class name -> (module class, config dataclass). Built-in models register themselves below.
REGISTRY: dict[str, tuple[type[nn.Module], type]] = {}


def register(name: str, cls: type[nn.Module], config_cls: type) -> None:
    """Make `name` (as written in a checkpoint's config.json) build `cls(config_cls(**config))`."""
    REGISTRY[name] = (cls, config_cls)


def _class_name(module: nn.Module) -> str:
    for name, (cls, _) in REGISTRY.items():
        if type(module) is cls:
            return name
    raise CheckpointError(f"{type(module).__name__} is not registered: call kinema.checkpoint.register(name, cls, config_cls) first")


def config_dict(module: nn.Module) -> dict[str, Any]:
    """The module's dataclass config as JSON-ready data, with "_class_name"."""
    config = getattr(module, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise CheckpointError(f"{type(module).__name__} has no dataclass `.config` to save")
    return {"_class_name": _class_name(module), **json.loads(json.dumps(dataclasses.asdict(config)))}


def build_from_config(config: dict[str, Any], where: str = "config") -> nn.Module:
    """A freshly initialised module from a config dict with "_class_name"."""
    name = config.get("_class_name")
    if name not in REGISTRY:
        raise CheckpointError(f"{where}: unknown _class_name {name!r}; known: {', '.join(sorted(REGISTRY)) or 'none'}")
    cls, config_cls = REGISTRY[name]
    fields = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(config) - fields - {k for k in config if k.startswith("_")})
    if unknown:
        raise CheckpointError(f"{where}: {name} has no config fields {', '.join(unknown)}")
    try:
        return cls(config_cls(**{k: v for k, v in config.items() if k in fields}))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{where}: cannot build {name}: {err}") from err


def read_json(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file, which must hold an object (every config and index does)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds a JSON {type(data).__name__}, expected an object {{...}}")
    return data


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file as a dict, with one clear error for a missing or damaged file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({err})") from err


def load_weights(module: nn.Module, tensors: dict[str, torch.Tensor], path: Path | str) -> None:
    """Copy `tensors` into `module`, strictly: every key present, every shape equal."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not fit {type(module).__name__}: missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for key, value in tensors.items():
        if own[key].shape != value.shape:
            raise CheckpointError(f"{path}: {key} has shape {list(value.shape)}, the model expects {list(own[key].shape)}")
    module.load_state_dict({k: v.to(own[k].dtype) for k, v in tensors.items()}, strict=True)


def state_tensors(module: nn.Module | dict[str, torch.Tensor], dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The state dict (of a module, or one already gathered) as contiguous CPU tensors,
    floating ones cast to `dtype` if given; tensors that share storage are cloned apart
    (safetensors refuses shared storage)."""
    out = {}
    state = module.state_dict() if isinstance(module, nn.Module) else module
    for key, value in state.items():
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        out[key] = value.contiguous().clone()
    return out


def write_component(folder: Path, module: nn.Module, dtype: torch.dtype | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_NAME).write_text(json.dumps(config_dict(module), indent=2) + "\n")
    save_file(state_tensors(module, dtype), str(folder / WEIGHTS_NAME), metadata={"format": "pt"})


def save_pretrained(
    folder: str | os.PathLike,
    components: dict[str, nn.Module],
    index_extra: dict[str, Any] | None = None,
    dtype: torch.dtype | None = None,
    *,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write an inference folder atomically: it appears whole or not at all. `dtype`
    (e.g. torch.bfloat16) stores floating weights smaller; loading casts them back.
    `extra_files` maps paths inside the folder (e.g. "scheduler/config.json") to text
    written with the rest, inside the same atomic write."""
    folder = Path(folder)
    index = {"_kinema_format": 1, "components": {name: _class_name(m) for name, m in components.items()}, **(index_extra or {})}
    with atomic_dir(folder) as tmp:
        for name, module in components.items():
            write_component(tmp / name, module, dtype)
        for relative, text in (extra_files or {}).items():
            if Path(relative).is_absolute() or ".." in Path(relative).parts:
                raise ValueError(f"extra file {relative!r} must be a path inside the model folder")
            target = tmp / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        (tmp / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return folder


def add_component(folder: str | os.PathLike, name: str, module: nn.Module, dtype: torch.dtype | None = None) -> Path:
    """Add (or replace) component `name` of an existing save_pretrained folder, atomically:
    the folder is copied with the new component and its model_index.json entry, then swapped in."""
    import shutil

    folder = Path(folder)
    index = read_json(folder / MODEL_INDEX)
    index["components"] = {**index.get("components", {}), name: _class_name(module)}
    with atomic_dir(folder) as tmp:
        shutil.copytree(folder, tmp, dirs_exist_ok=True, ignore=lambda d, names: [name] if Path(d) == folder else [])
        write_component(tmp / name, module, dtype)
        (tmp / MODEL_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return folder


def load_component(folder: str | os.PathLike, name: str, device: str | torch.device = "cpu") -> nn.Module:
    """Build and load component `name` of a save_pretrained folder, in eval mode."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such checkpoint folder")
    index_path = folder / MODEL_INDEX
    components = read_json(index_path).get("components", {})
    if not isinstance(components, dict):
        raise CheckpointError(f"{index_path}: 'components' must map component names to class names")
    if name not in components:
        raise CheckpointError(f"{index_path}: no component {name!r}; it has {', '.join(components) or 'none'}")
    sub = folder / name
    config = read_json(sub / CONFIG_NAME)
    module = build_from_config(config, str(sub / CONFIG_NAME))  # first: a class name not in the registry is refused as such
    if config.get("_class_name") != components[name]:
        raise CheckpointError(
            f"{sub / CONFIG_NAME} says its class is {config.get('_class_name')!r} but {index_path} says "
            f"component {name!r} is a {components[name]!r}: the folder is inconsistent; save it again"
        )
    load_weights(module, read_tensors(sub / WEIGHTS_NAME), sub / WEIGHTS_NAME)
    return module.to(device).eval()


def _register_builtins() -> None:
    from .tokenizer.cvivit import CViViT, CViViTConfig

    register("CViViT", CViViT, CViViTConfig)


_register_builtins()
