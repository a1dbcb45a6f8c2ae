"""`--set key=value` overrides of a topology document, applied before validation."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from mpsl.schema import TopologyError

# Fields that hold a path: a value given on the command line is relative to the working
# directory (the file's own values are relative to the file's folder).
PATH_FIELDS = ("dataset.root", "plan.profile", "data_owners.profile", "security.keys")


def apply_overrides(data: Mapping[str, Any], assignments: Iterable[str],
                    source: str) -> dict[str, Any]:
    """Apply `key.sub=value` assignments (values parsed as YAML) to a copy of a raw document."""
    out = copy.deepcopy(dict(data))
    for item in assignments:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise TopologyError(source, "--set", item, "key=value, e.g. training.epochs=2")
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            raise TopologyError(source, key, text, "a YAML value") from None
        node: Any = out
        parts = key.split(".")
        for part in parts[:-1]:
            if node.get(part) is None or not isinstance(node.get(part), dict):
                if isinstance(node.get(part), str):  # e.g. plan: auto -> a mapping
                    node[part] = {"auto": True} if node[part] == "auto" else {}
                else:
                    node[part] = {} if node.get(part) is None else node[part]
                if not isinstance(node[part], dict):
                    raise TopologyError(source, key, item, "a path through mappings")
            node = node[part]
        if key in PATH_FIELDS and isinstance(value, str) and value:
            value = os.path.abspath(os.path.expanduser(value))
        node[parts[-1]] = value
    return out
