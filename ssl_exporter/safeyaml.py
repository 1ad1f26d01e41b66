"""YAML from files someone else may write (kubeconfigs, configuration): bounded in size and depth.

``yaml.safe_load`` builds no arbitrary objects but expands aliases, so 500 bytes of nested
anchors become gigabytes once anything walks or prints the value (the "billion laughs"),
and it recurses once per nesting level, so a deep document ends in RecursionError.
:func:`load` refuses both while composing, before any value is built, with a one-line
:class:`UnsafeYAML` (a ValueError; yaml.YAMLError is not one).
"""

from __future__ import annotations

from typing import Any

import yaml

# Deeper than any kubeconfig or configuration file (they nest 5 to 8 levels), far below
# Python's recursion limit.
MAX_DEPTH = 64
# Nodes of the document once every alias is expanded: a kubeconfig of 1,000 clusters has
# ~20,000; an alias bomb has billions.
MAX_EXPANDED_NODES = 200_000


class UnsafeYAML(ValueError):
    """Not valid YAML, an alias where none is allowed, too deep, or too large expanded."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that checks aliases, depth and expanded size as it composes. (The
    pure-Python loader: libyaml's composes in C, where these checks cannot hook in.)"""

    allow_aliases = True

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent) and not self.allow_aliases:
            event = self.peek_event()
            raise UnsafeYAML(f"YAML aliases (*{clip(event.anchor)}) are not accepted, line "
                             f"{event.start_mark.line + 1}")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise UnsafeYAML(f"nested deeper than {MAX_DEPTH} levels, line {self.peek_event().start_mark.line + 1}")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        size = self._sizes.get(id(node))
        if size is None:  # a new node (an alias returns one already counted)
            size = 1 + sum(self._sizes[id(child)] for child in _children(node))
            self._sizes[id(node)] = size
            if size > MAX_EXPANDED_NODES:
                raise UnsafeYAML(f"more than {MAX_EXPANDED_NODES} values once aliases are expanded, line "
                                 f"{node.start_mark.line + 1}")
        return node


class _NoAliasLoader(_Loader):
    allow_aliases = False


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def load(data: str | bytes, aliases: bool = True) -> Any:
    """The one YAML document in ``data``; UnsafeYAML (one line) if it is not safe to use.

    With ``aliases`` (the default), aliases are allowed but the document, expanded, must
    stay within MAX_EXPANDED_NODES; without, any alias is refused.
    """
    try:
        return yaml.load(data, Loader=_Loader if aliases else _NoAliasLoader)  # noqa: S506 - a SafeLoader
    except UnsafeYAML:
        raise
    except yaml.MarkedYAMLError as exc:
        where = f", line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise UnsafeYAML(f"not valid YAML: {clip(exc.problem or 'syntax error')}{where}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # RecursionError: a nesting the count missed
        raise UnsafeYAML(f"not valid YAML: {clip(str(exc) or type(exc).__name__)}") from None


def clip(value: object, limit: int = 80) -> str:
    """``value`` as one line of at most ``limit`` characters: safe to put in an error message."""
    text = " ".join(str(value)[: 4 * limit].split())
    return text if len(text) <= limit else text[:limit] + "…"
