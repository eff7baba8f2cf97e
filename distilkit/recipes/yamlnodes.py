"""YAML → plain Python values plus the source line of every key, for error messages that point into the file.

Recipes are plain data: mappings, lists and scalars. Anchors and aliases (`&a`, `*a`: self-referencing
or exponentially expanding ones hang or crash a loader), merge keys (`<<`), explicit tags (`!!python/...`,
`!custom`, `!!binary`) and nesting deeper than MAX_DEPTH are refused where they occur, with the line.
"""

from __future__ import annotations

import re
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from distilkit.errors import DistilkitError

Path = tuple[Any, ...]

#: Deepest nesting of mappings and lists a recipe may use (the shipped ones need 5).
MAX_DEPTH = 32

#: Numbers in exponent form that YAML 1.2 reads as floats but PyYAML (YAML 1.1) as strings: 1e-3, 4.0e4, 1E+3.
_EXPONENT_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)[eE][-+]?[0-9]+")
_TAG = "tag:yaml.org,2002:"
_STR_TAG, _MERGE_TAG = _TAG + "str", _TAG + "merge"
#: Scalar types a recipe holds; any other implicit type (timestamp, `=`) is kept as the text written.
_PLAIN_SCALAR_TAGS = frozenset(_TAG + t for t in ("null", "bool", "int", "float", "str"))


class _Refused(yaml.MarkedYAMLError):
    """Well-formed YAML that recipes do not allow (alias, anchor, tag, too deep)."""


class _PlainLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses anything but untagged mappings, lists and scalars, nested at most
    MAX_DEPTH deep, before it builds a node (so an alias bomb is never expanded)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        problem = None
        if isinstance(event, yaml.AliasEvent):
            problem = f"alias *{event.anchor}: anchors and aliases are not allowed in recipes; write the value out"
        elif event.anchor is not None:
            problem = f"anchor &{event.anchor}: anchors and aliases are not allowed in recipes; write the value out"
        elif getattr(event, "tag", None) is not None:
            problem = (f"tag {event.tag.replace(_TAG, '!!')}: YAML tags are not allowed in recipes; "
                       "write a plain value (quote a string)")
        elif self._depth >= MAX_DEPTH:
            problem = f"nested more than {MAX_DEPTH} levels deep"
        if problem:
            raise _Refused(None, None, problem, event.start_mark)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_with_lines(text: str, source: str) -> tuple[Any, dict[Path, int]]:
    """Parse YAML text; return the value and a map from key path (e.g. ("stages", 2, "losses")) to 1-based line."""
    loader = None
    try:
        loader = _PlainLoader(text)  # its reader refuses control characters at once
        node = loader.get_single_node()
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        message = f"{where}: {problem}" if isinstance(err, _Refused) else f"{where}: malformed YAML: {problem}"
        raise DistilkitError(message) from None
    finally:
        if loader is not None:
            loader.dispose()
    if node is None:
        raise DistilkitError(f"{source}: empty recipe file")
    lines: dict[Path, int] = {}
    return _Converter(source, lines).value(node, ()), lines


class _Converter:
    """Composed nodes → Python values, recording each key's line."""

    def __init__(self, source: str, lines: dict[Path, int]):
        self.source, self.lines = source, lines
        self.constructor = SafeConstructor()

    def value(self, node: yaml.Node, path: Path) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if key_node.tag == _MERGE_TAG:
                    raise DistilkitError(f"{self.source}:{line}: merge keys (<<) are not allowed in recipes; write the keys out")
                key = self.scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    raise DistilkitError(f"{self.source}:{line}: mapping keys must be strings")
                if key in out:
                    raise DistilkitError(f"{self.source}:{line}: duplicate key {key!r}")
                self.lines[path + (key,)] = line
                out[key] = self.value(value_node, path + (key,))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.value(item, path + (i,)) for i, item in enumerate(node.value)]
        return self.scalar(node)

    def scalar(self, node: yaml.ScalarNode) -> Any:
        """A null, bool, int, float or str; other implicit types stay the text written."""
        if node.tag == _STR_TAG and node.style is None and _EXPONENT_FLOAT.fullmatch(node.value):
            return float(node.value)  # unquoted `lr: 1e-3` is a number, as in YAML 1.2; quoted "1e-3" stays a string
        if node.tag not in _PLAIN_SCALAR_TAGS:
            return node.value
        try:
            return self.constructor.construct_object(node)
        except (ValueError, OverflowError):  # an integer of thousands of digits
            text = node.value if len(node.value) <= 20 else node.value[:17] + "..."
            raise DistilkitError(f"{self.source}:{node.start_mark.line + 1}: number {text} is too large") from None
