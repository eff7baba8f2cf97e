"""Which model family a recipe's `family:` names: a registered name or a `package.module:Attribute` path.

Names come from `register_family` (in the running program) and from the `distilkit.families` entry-point
group of installed packages (distilkit registers its own there: `mixformerv2`, `vit-classifier`), so a
user's family is found without editing distilkit. A `module:attr` value imports that module and takes the
attribute: a `ModelFamily` instance, or a subclass built without arguments.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Union

from distilkit.errors import DistilkitError
from distilkit.recipes.family import ModelFamily

ENTRY_POINT_GROUP = "distilkit.families"
#: The family of a recipe without a `family:` key (every recipe before families existed was MixFormerV2's).
DEFAULT_FAMILY = "mixformerv2"

_REGISTERED: dict[str, ModelFamily] = {}


def register_family(name: str, family: Union[ModelFamily, type[ModelFamily]]) -> None:
    """Make `family:` NAME resolve to `family` in this program (an instance, or a class built without arguments)."""
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise DistilkitError(f"register_family: the name must be a non-empty string without ':', got {name!r}")
    _REGISTERED[name] = _instance(family, f"register_family({name!r})")


def family_names() -> list[str]:
    """Every name a recipe's `family:` may use: registered here and installed entry points."""
    return sorted(set(_REGISTERED) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def resolve_family(value: str) -> ModelFamily:
    """The family `value` names (a registered/installed name or `module:attr`); a one-line error otherwise."""
    if not isinstance(value, str) or not value.strip():
        raise DistilkitError(f"expected a family name or 'package.module:Attribute', got {value!r}")
    value = value.strip()
    if value in _REGISTERED:
        return _REGISTERED[value]
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == value]
    if found:
        target = found[0].value
    elif ":" in value:
        target = value
    else:
        raise DistilkitError(f"unknown model family {value!r}; known: {', '.join(family_names()) or 'none'} "
                             "(or give 'package.module:Attribute')")
    return _instance(_import(target), target)


def _import(target: str) -> object:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name.strip())
    except ImportError as err:
        raise DistilkitError(f"family {target!r}: cannot import {module_name!r} ({err})") from None
    try:
        return getattr(module, attr.strip())
    except AttributeError:
        raise DistilkitError(f"family {target!r}: module {module_name!r} has no attribute {attr!r}") from None


def _instance(obj: object, where: str) -> ModelFamily:
    if isinstance(obj, type) and issubclass(obj, ModelFamily):
        obj = obj()
    if not isinstance(obj, ModelFamily):
        raise DistilkitError(f"{where}: not a distilkit.recipes.family.ModelFamily (got {type(obj).__name__})")
    if not obj.name:
        raise DistilkitError(f"{where}: the family has no name")
    return obj
