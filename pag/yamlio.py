"""Reading YAML that a user or an attacker wrote: profiles, run params, a run's params.yaml.

`yaml.safe_load` builds no objects beyond plain data, but it still accepts three things a
config file never needs and that break what reads it: a key given twice (the last one wins,
silently), aliases that expand to billions of values (an "anchor bomb" of a few hundred bytes,
which any walk over the data then takes forever to visit), and nesting thousands of levels
deep (a `RecursionError` in the composer). `load_yaml` refuses each with one line naming the
file and the line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pag.errors import PagError

MAX_DEPTH = 48  # nesting levels (a profile uses 4)
MAX_VALUES = 20_000  # scalars, sequences and mappings once aliases are expanded (a profile: ~300)
MAX_BYTES = 1 << 20

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Refused(Exception):
    pass


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and nesting deeper than `MAX_DEPTH`."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self._depth >= MAX_DEPTH:
            line = self.peek_event().start_mark.line + 1
            raise _Refused(f"line {line}: nested deeper than {MAX_DEPTH} levels")
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            first: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # `<<: *base` then a key: an override, which is what merges are for
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first.get(key)
                except TypeError:
                    continue  # an unhashable key: SafeLoader's own error names it
                line = key_node.start_mark.line + 1
                if seen is not None:
                    raise _Refused(f"line {line}: key {key!r} is given twice (also at line {seen})")
                first[key] = line
        return super().construct_mapping(node, deep)


def _expanded_size(node: Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """How many values `node` stands for once every alias is expanded (memoised per node, so a
    bomb is measured in time linear in the file)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise _Refused(f"line {node.start_mark.line + 1}: an alias refers to itself")
    open_nodes.add(key)
    size = 1
    if isinstance(node, SequenceNode):
        size += sum(_expanded_size(child, sizes, open_nodes) for child in node.value)
    elif isinstance(node, MappingNode):
        for k, v in node.value:
            size += _expanded_size(k, sizes, open_nodes) + _expanded_size(v, sizes, open_nodes)
    elif not isinstance(node, ScalarNode):  # pragma: no cover  (PyYAML has no other node kind)
        raise _Refused(f"line {node.start_mark.line + 1}: unexpected node {type(node).__name__}")
    open_nodes.discard(key)
    sizes[key] = min(size, MAX_VALUES + 1)
    return sizes[key]


def parse_yaml(text: str, source: str | os.PathLike) -> Any:
    """The data of one YAML document, or a PagError naming `source` and the line."""
    if len(text) > MAX_BYTES:
        raise PagError(f"{source}: {len(text)} bytes; a params file is at most {MAX_BYTES}")
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, set()) > MAX_VALUES:
            raise _Refused(f"its aliases expand to more than {MAX_VALUES} values")
        return loader.construct_document(node)
    except _Refused as exc:
        raise PagError(f"{source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise PagError(f"{source}: not valid YAML ({' '.join(str(exc).split())})") from None
    except RecursionError:  # pragma: no cover  (MAX_DEPTH stops it first)
        raise PagError(f"{source}: nested too deep") from None
    finally:
        loader.dispose()


def load_yaml(path: str | os.PathLike, what: str = "file") -> Any:
    """Read and parse a YAML file; a missing or unreadable file names itself and `what`."""
    path = Path(path)
    if not path.is_file():
        raise PagError(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PagError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return parse_yaml(text, path)
