"""A sweep's spec: a base config plus axes to vary, expanded into cells with validated configs.
Nothing here writes; `sngan.studies.sweep` runs the cells. The spec format is in docs/sweeps.md."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sngan import config, config_files
from sngan.errors import UsageError
from sngan.runs.checkpoint import check_parent

SPEC_KEYS = ("base", "set", "axes", "extra")
SWEEPS_DIRS = [d / "sweeps" for d in config_files.BUNDLED_CONFIG_DIRS]


@dataclass
class Cell:
    name: str
    axes: dict[str, str]  # axis name -> label ("—" for an extra cell that does not name that axis)
    overrides: dict[str, Any]  # dotted key -> value, on top of the base
    cfg: config.Config
    status: str = "pending"
    step: int = 0
    message: str = ""


@dataclass
class Sweep:
    folder: Path
    cells: list[Cell]
    axes: dict[str, list[str]]  # axis name -> its labels, in order
    spec: str = ""  # the spec file it came from
    spec_text: str = ""  # "" when continued from the folder: sweep.yaml stays as it is
    overrides: list[str] = field(default_factory=list)  # --set given with the spec

    def cell_dir(self, cell: Cell) -> Path:
        return self.folder / "cells" / cell.name

    def chosen(self, only: str | None) -> set[str] | None:
        """The cell names `--only` gives (comma-separated), each one of this sweep's; None: every cell."""
        if only is None:
            return None
        names = {name.strip() for name in only.split(",") if name.strip()}
        unknown = sorted(names - {c.name for c in self.cells})
        if unknown or not names:
            raise UsageError(f"--only: this sweep has no cell named {', '.join(unknown) or repr(only)}; "
                             "--dry-run lists its cells")
        return names


def find_spec(name: str) -> Path:
    """A spec file at `name`, else a bundled spec in configs/sweeps (with or without .yaml)."""
    p = Path(name)
    bundled = [d / n for d in SWEEPS_DIRS for n in (p.name, f"{p.name}.yaml")] if p.parent == Path(".") else []
    for candidate in [p, *bundled]:
        if candidate.is_file():
            return candidate
    names = sorted({q.stem for d in SWEEPS_DIRS if d.is_dir() for q in d.glob("*.yaml")})
    raise UsageError(f"sweep spec '{name}' not found, and it is not a sweep folder "
                     f"(bundled specs: {', '.join(names) or 'none found'})")


def read_spec(path: Path) -> dict:
    spec = config_files.parse_yaml_file(path, "sweep spec")
    if not isinstance(spec, dict):
        raise UsageError(f"sweep spec '{path}' must be a mapping with base:, set:, axes: and extra:")
    for key in spec:
        if key not in SPEC_KEYS:
            raise UsageError(f"unknown sweep spec key '{key}' in '{path}'; valid keys: {', '.join(SPEC_KEYS)}")
    if "base" not in spec:
        raise UsageError(f"sweep spec '{path}' needs 'base: CONFIG' (a config file or bundled name)")
    if not spec.get("axes") and not spec.get("extra"):
        raise UsageError(f"sweep spec '{path}' has no cells: give 'axes:' (and/or 'extra:')")
    return spec


def set_key(data: dict, dotted: str, value: Any) -> None:
    """Set a dotted key in nested config data, keeping the value's YAML type."""
    node, parts = data, dotted.split(".")
    for part in parts[:-1]:
        if part == "loss" and isinstance(node.get(part), str):  # shorthand `loss: hinge`
            node[part] = {"name": node[part]}
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UsageError(f"sweep override '{dotted}': '{part}' is not a config section")
    node[parts[-1]] = value


def _label(key: str, value: Any) -> str:
    """A value's label in cell names: strings as they are (`sn`), numbers with their key (`seed0`)."""
    return value if isinstance(value, str) and value else f"{key.rsplit('.', 1)[-1]}{value}"


def parse_axes(axes: Any, where: str) -> dict[str, dict[str, dict[str, Any]]]:
    """axis name -> {label: {dotted key: value}}, from lists of one key's values or named bundles."""
    if not isinstance(axes or {}, dict):
        raise UsageError(f"'axes' in '{where}' must map axis names to a list of values or to named bundles")
    parsed = {}
    for name, values in (axes or {}).items():
        if isinstance(values, list) and values:
            parsed[name] = {_label(name, v): {name: v} for v in values}
            if len(parsed[name]) < len(values):
                raise UsageError(f"axis '{name}' in '{where}' repeats a value")
        elif isinstance(values, dict) and values:
            for label, bundle in values.items():
                if not isinstance(bundle, dict):
                    raise UsageError(f"axis '{name}' in '{where}': bundle '{label}' must be a mapping of config "
                                     "keys to values (for one key's values, give a list)")
            parsed[name] = {str(label): config_files.flatten(bundle) for label, bundle in values.items()}
        else:
            raise UsageError(f"axis '{name}' in '{where}' must be a non-empty list of values or mapping of "
                             "label -> overrides")
    return parsed


def _extra_cell(name: str, entry: Any, axes: dict, where: str) -> tuple[str, dict, dict]:
    """(name, axis labels, overrides) of an extra cell: an axis label brings its bundle."""
    if not isinstance(entry, dict):
        raise UsageError(f"extra cell '{name}' in '{where}' must be a mapping of axis labels and/or overrides")
    labels, overrides = {axis: "—" for axis in axes}, {}
    for key, value in config_files.flatten(entry).items():
        if key not in axes:
            overrides[key] = value
        elif str(value) in axes[key]:
            labels[key] = str(value)
            overrides.update(axes[key][str(value)])
        elif all(b.keys() == {key} for b in axes[key].values()):  # a new value of a one-key axis
            labels[key], overrides[key] = _label(key, value), value
        else:
            raise UsageError(f"extra cell '{name}': axis '{key}' has no label '{value}' "
                             f"(labels: {', '.join(axes[key])})")
    return str(name), labels, overrides


def expand(spec: dict, spec_path: Path, overrides: list[str], folder: Path | None) -> Sweep:
    """The cells of a spec: base, `set`, `--set`, then each cell's axis values, validated."""
    where = str(spec_path)
    base_file = spec_path.parent / str(spec["base"])
    base = config_files.read_yaml(base_file if base_file.is_file() else config_files.find_config(str(spec["base"])))
    if not isinstance(spec.get("set") or {}, dict):
        raise UsageError(f"'set' in '{where}' must be a mapping of config keys to values")
    if not isinstance(spec.get("extra") or {}, dict):
        raise UsageError(f"'extra' in '{where}' must map cell names to axis labels and/or overrides")
    for key, value in config_files.flatten(spec.get("set") or {}).items():
        set_key(base, key, value)
    base = config_files.apply_overrides(base, overrides)
    base_cfg = validated(base, "the base config")
    folder = folder or Path(base_cfg.out.root) / "sweeps" / spec_path.stem  # a re-run finds the same sweep
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"sweep folder '{folder}' is a file; give --out a new folder or a sweep folder")
    check_parent(folder)
    axes = parse_axes(spec.get("axes"), where)
    cells = [("", {}, {})] if axes else []
    for axis, bundles in axes.items():  # the product, first axis slowest
        cells = [(f"{name}-{label}" if name else label, {**labels, axis: label}, {**ov, **b})
                 for name, labels, ov in cells for label, b in bundles.items()]
    cells += [_extra_cell(name, entry, axes, where) for name, entry in (spec.get("extra") or {}).items()]
    built, seen = [], {}
    for name, labels, ov in cells:
        safe = re.sub(r"[^A-Za-z0-9_.+-]+", "-", name).strip("-") or "cell"
        if safe in seen:
            raise UsageError(f"sweep cells '{seen[safe]}' and '{name}' get the same folder name '{safe}'; "
                             "rename a label or an extra cell")
        seen[safe], data = name, json.loads(json.dumps(base))  # a deep copy of plain data
        for key, value in ov.items():
            set_key(data, key, value)
        built.append(Cell(safe, labels, ov, cell_config(data, folder, safe)))
    return Sweep(folder, built, {a: list(b) for a, b in axes.items()}, where, spec_path.read_text(), list(overrides))


def validated(data: dict, what: str) -> config.Config:
    try:
        return config.from_dict(data)
    except UsageError as e:
        raise UsageError(f"{what}: {e}") from None


def cell_config(data: dict, folder: Path, name: str) -> config.Config:
    cfg = validated(data, f"sweep cell '{name}'")
    cfg.out.root, cfg.out.name = str(folder / "cells"), name
    return cfg
