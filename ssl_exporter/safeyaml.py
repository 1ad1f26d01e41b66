"""The one YAML loader: bounded in depth and in what aliases expand to, for every file we read.

``yaml.safe_load`` builds no arbitrary objects but expands aliases, so 500 bytes of nested
anchors become gigabytes once anything walks or prints the value (the "billion laughs"),
and it recurses once per nesting level, so a deep document ends in RecursionError.
:class:`_Loader` refuses both while composing, before any value is built. What it bounds is
given by :class:`Limits`; each caller keeps its own limits and its own message style:

- :func:`load`: files someone else may write (kubeconfigs): the whole document, aliases
  expanded, within MAX_EXPANDED_NODES; a one-line :class:`UnsafeYAML` (a ValueError;
  yaml.YAMLError is not one).
- :func:`load_config`: the exporter's configuration and web configuration: the nodes that
  aliases add within MAX_ALIAS_NODES; the caller's error class, with the problem and its
  place, never YAML's own message (it quotes the file, secrets included).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml
import yaml.composer

from ssl_exporter.printable import cut

# Deeper than any kubeconfig or configuration file (they nest 5 to 8 levels), far below
# Python's recursion limit.
MAX_DEPTH = 64
# Nodes of a kubeconfig once every alias is expanded: one of 1,000 clusters has ~20,000; an
# alias bomb has billions.
MAX_EXPANDED_NODES = 200_000
# Nodes that aliases may add to a configuration, counted expanded: ten levels of ten aliases
# make a few hundred bytes that expand to 10^10 nodes.
MAX_ALIAS_NODES = 100_000


@dataclass(frozen=True)
class Limits:
    """What one kind of file may hold; None: that count is not bounded."""

    max_depth: int = MAX_DEPTH
    max_expanded_nodes: int | None = None  # the whole document, aliases expanded
    max_alias_nodes: int | None = None  # the nodes aliases add, counted expanded
    aliases: bool = True  # False: any alias is refused
    # An alias to a collection inside itself: refused in configurations (something walks them
    # as trees); a kubeconfig's is only indexed, and has always been accepted.
    recursive_aliases: bool = False


KUBECONFIG_LIMITS = Limits(max_expanded_nodes=MAX_EXPANDED_NODES, recursive_aliases=True)
CONFIG_LIMITS = Limits(max_alias_nodes=MAX_ALIAS_NODES)


class UnsafeYAML(ValueError):
    """Not valid YAML, an alias where none is allowed, too deep, or too large expanded."""


class _Refused(yaml.composer.ComposerError):
    """A document the limits refuse (as opposed to one that is not YAML)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(None, None, problem, mark)


class _Loader(yaml.SafeLoader):
    """SafeLoader that checks aliases, depth and expanded size as it composes. (The
    pure-Python loader: libyaml's composes in C, where these checks cannot hook in.)"""

    def __init__(self, stream: str | bytes, limits: Limits) -> None:
        super().__init__(stream)
        self._limits = limits
        self._depth = 0
        self._alias_nodes = 0
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it stands for, aliases expanded

    def compose_node(self, parent: Any, index: Any) -> Any:
        limits = self._limits
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
            if not limits.aliases:
                raise _Refused(f"YAML aliases (*{clip(event.anchor)}) are not accepted", event.start_mark)
            target = self.anchors.get(event.anchor)
            if target is not None:
                if target.end_mark is None:  # a collection still being composed: itself
                    if not limits.recursive_aliases:
                        raise _Refused(f"recursive alias *{clip(event.anchor, 40)}", event.start_mark)
                    return super().compose_node(parent, index)  # counted once it is composed
                self._alias_nodes += self._sizes.get(id(target), 1)
                if limits.max_alias_nodes is not None and self._alias_nodes > limits.max_alias_nodes:
                    raise _Refused(f"aliases expand to more than {limits.max_alias_nodes} nodes", event.start_mark)
            return super().compose_node(parent, index)
        if self._depth >= limits.max_depth:
            raise _Refused(f"nested deeper than {limits.max_depth} levels",
                           self.peek_event().start_mark)  # type: ignore[no-untyped-call]
        self._depth += 1
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if node is None:
            return node
        # Children are composed (and sized) before their parent: linear in the document.
        size = 1 + sum([self._sizes.get(id(child), 1) for child in _children(node)])
        self._sizes[id(node)] = size
        if limits.max_expanded_nodes is not None and size > limits.max_expanded_nodes:
            raise _Refused(f"more than {limits.max_expanded_nodes} values once aliases are expanded",
                           node.start_mark)
        return node


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _compose(data: str | bytes, limits: Limits) -> Any:
    loader = _Loader(data, limits)  # the reader checks the text here already
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load(data: str | bytes, aliases: bool = True) -> Any:
    """The one YAML document in ``data``; UnsafeYAML (one line) if it is not safe to use.

    With ``aliases`` (the default), aliases are allowed but the document, expanded, must
    stay within MAX_EXPANDED_NODES; without, any alias is refused.
    """
    limits = KUBECONFIG_LIMITS if aliases else Limits(max_expanded_nodes=MAX_EXPANDED_NODES, aliases=False,
                                                      recursive_aliases=True)
    try:
        return _compose(data, limits)
    except _Refused as exc:
        where = f", line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise UnsafeYAML(f"{exc.problem}{where}") from None
    except yaml.MarkedYAMLError as exc:
        where = f", line {exc.problem_mark.line + 1}" if exc.problem_mark else ""
        raise UnsafeYAML(f"not valid YAML: {clip(exc.problem or 'syntax error')}{where}") from None
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # RecursionError: a nesting the count missed
        raise UnsafeYAML(f"not valid YAML: {clip(str(exc) or type(exc).__name__)}") from None


def load_config(text: str, source: str, error: type[ValueError], limits: Limits = CONFIG_LIMITS) -> Any:
    """One YAML document of a configuration; ``error`` with the problem and its place if bad."""
    prefix = f"{source}: " if source else ""
    try:
        return _compose(text, limits)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise error(f"{prefix}{problem}{where}") from None
    except RecursionError:  # a nesting the bound above did not catch (a long merge-key chain)
        raise error(f"{prefix}nested too deeply") from None


def clip(value: object, limit: int = 80) -> str:
    """``value`` as one line of at most ``limit`` characters: safe to put in an error message."""
    return cut(" ".join(str(value)[: 4 * limit].split()), limit)
