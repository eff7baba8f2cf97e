"""YAML → plain Python values plus the source line of every key, for error messages that point into the file."""

from __future__ import annotations

import re
from typing import Any

import yaml

from distilkit.errors import DistilkitError

Path = tuple[Any, ...]

#: Numbers in exponent form that YAML 1.2 reads as floats but PyYAML (YAML 1.1) as strings: 1e-3, 4.0e4, 1E+3.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")
_STR_TAG = "tag:yaml.org,2002:str"


def load_with_lines(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    """Parse YAML text; return the value and a map from key path (e.g. ("stages", 2, "losses")) to 1-based line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DistilkitError(f"{where}: malformed YAML: {problem}") from None
    if node is None:
        raise DistilkitError(f"{source}: empty recipe file")
    lines: dict[Path, int] = {}
    return _convert(node, (), lines, source), lines


def _convert(node: yaml.Node, path: Path, lines: dict[Path, int], source: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.SafeLoader(" ").construct_object(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise DistilkitError(f"{source}:{key_node.start_mark.line + 1}: mapping keys must be strings")
            if key in out:
                raise DistilkitError(f"{source}:{key_node.start_mark.line + 1}: duplicate key {key!r}")
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _convert(value_node, path + (key,), lines, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, path + (i,), lines, source) for i, item in enumerate(node.value)]
    if node.tag == _STR_TAG and node.style is None and _EXPONENT_FLOAT.fullmatch(node.value):
        return float(node.value)  # unquoted `lr: 1e-3` is a number, as in YAML 1.2; quoted "1e-3" stays a string
    return yaml.SafeLoader(" ").construct_object(node)
