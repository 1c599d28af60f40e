"""The one YAML reader of locbench: safe (no tags that build objects) and bounded (no alias bombs).

PyYAML's ``safe_load`` shares the object an alias points to, so a "billion laughs" document loads into little
memory, but every later deep copy, JSON dump or comparison of it expands the aliases (a MemoryError under any cap).
:func:`load_yaml` counts the values a document holds with its aliases expanded and refuses one above
:data:`MAX_VALUES` before building anything; no config, sweep file or ``--set`` value comes near it.
"""

from __future__ import annotations

from typing import Any

import yaml

from locbench.errors import LocbenchError

#: Most values (scalars, lists, mappings, counted with aliases expanded) one YAML document may hold.
MAX_VALUES = 100_000


class YamlTooLarge(LocbenchError, yaml.YAMLError):
    """A YAML document too large (expanded) or too deeply nested to read: a user error and a YAML error, so that
    every reader's ``except yaml.YAMLError`` names its file."""


class _BoundedLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a document expanding to more than :data:`MAX_VALUES` values."""

    where = "YAML"

    def construct_document(self, node: yaml.Node) -> Any:
        size = _expanded_size(node, {})
        if size > MAX_VALUES:
            raise YamlTooLarge(
                f"{self.where}: the YAML document expands to more than {MAX_VALUES:,} values through its aliases "
                "(&name / *name), an alias bomb or a mistake; write the values out or use fewer aliases"
            )
        return super().construct_document(node)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Values under ``node`` with aliases expanded; each distinct node is counted once (``memo``), so the cost is
    linear in the document, however large its expansion."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_VALUES + 1  # a node reached again while being counted is a cycle: too large to expand
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = min(size, MAX_VALUES + 1)
    return memo[key]


def load_yaml(text: str, *, where: str = "YAML") -> Any:
    """Parse one YAML document safely, refusing alias bombs and nesting too deep to parse.

    Raises:
        yaml.YAMLError: a syntax error (callers name the file).
        YamlTooLarge: the document expands beyond :data:`MAX_VALUES` values or nests too deeply; names ``where``.
    """
    loader = _BoundedLoader(text)
    loader.where = where
    try:
        return loader.get_single_data()
    except RecursionError:
        raise YamlTooLarge(f"{where}: the YAML document nests too deeply to read; flatten it") from None
    finally:
        loader.dispose()
