"""Config files as plain data, before any typing: finding a file or a bundled config by name,
parsing YAML with one-line errors, and `section.key=value` overrides on nested dicts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from sngan.errors import UsageError

# Where the bundled configs live: inside the wheel (sngan/configs) or, for a source checkout
# and editable installs, the repository's top-level configs/ folder.
_HERE = Path(__file__).resolve().parent
BUNDLED_CONFIG_DIRS = [_HERE / "configs", _HERE.parent / "configs"]


def find_config(path: str | Path) -> Path:
    """The config file at `path`, else a bundled config of that name (with or without .yaml)."""
    p = Path(path)
    if p.is_file():
        return p
    names = [p.name] if p.suffix in (".yaml", ".yml") else [p.name + ".yaml", p.name]
    if p.parent == Path("."):
        found = [folder / name for folder in BUNDLED_CONFIG_DIRS for name in names if (folder / name).is_file()]
        if found:
            return found[0]
    bundled = ", ".join(list_bundled()) or "none found"
    raise UsageError(f"config file '{path}' not found (bundled configs: {bundled})")


def list_bundled() -> list[str]:
    for folder in BUNDLED_CONFIG_DIRS:
        if folder.is_dir():
            return sorted(p.stem for p in folder.glob("*.yaml"))
    return []


def parse_yaml_file(path: Path, what: str = "config"):
    """The YAML document in `path`; a one-line UsageError saying where parsing failed."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise UsageError(f"cannot parse {what} '{path}'{where}: {problem}") from None
    except OSError as e:
        raise UsageError(f"cannot read {what} '{path}': {e.strerror}") from None


def read_yaml(path: Path) -> dict:
    data = parse_yaml_file(path)
    if not isinstance(data, (dict, type(None))):
        raise UsageError(f"config '{path}' must be a mapping of sections (data:, model:, ...), "
                         f"got {type(data).__name__}")
    return data or {}


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `section.key=value` strings (values parsed as YAML scalars) to nested plain data."""
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"override '{item}' must look like section.key=value, e.g. train.steps=1000")
        dotted, raw = item.split("=", 1)
        parts = dotted.strip().split(".")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for part in parts[:-1]:
            if part == "loss" and isinstance(node.get(part), str):
                node[part] = {"name": node[part]}
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UsageError(f"override '{item}': '{part}' is not a section")
        node[parts[-1]] = value
    return data


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """{"optim": {"lr_g": 1}} and {"optim.lr_g": 1} both -> {"optim.lr_g": 1}."""
    if not isinstance(data, dict):
        return {prefix: data}
    return {k: v for key, value in data.items()
            for k, v in flatten(value, f"{prefix}.{key}" if prefix else str(key)).items()}
