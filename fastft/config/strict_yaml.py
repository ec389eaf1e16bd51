"""YAML for recipes and `--set` values: PyYAML's SafeLoader, minus what a recipe never needs and a hostile file can abuse.

SafeLoader already builds no Python objects. On top of it this refuses: every tag it has no constructor for
(`!!python/...`, `!include`), with a message naming the tag instead of PyYAML's "could not determine a
constructor"; aliases (`*name`), because nine short lines of them expand into a billion nodes and a
self-referencing one loops forever; a key given twice in one mapping, which SafeLoader would silently resolve
to the last value; and nesting deeper than MAX_DEPTH, where PyYAML's recursive composer would overflow the stack.
"""
import yaml

MAX_DEPTH = 32  # a recipe is section -> key -> list -> item deep
_TAG_PREFIX = "tag:yaml.org,2002:"
_MERGE_TAG = _TAG_PREFIX + "merge"


class Refused(yaml.MarkedYAMLError):
    """Well-formed YAML that recipes do not accept; `problem` says what and `problem_mark` where."""


class _StrictLoader(yaml.SafeLoader):
    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise Refused(problem="YAML aliases (*name) are not allowed in recipes; share settings with `_base_` instead",
                          problem_mark=self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise Refused(problem=f"the YAML is nested too deeply (more than {MAX_DEPTH} levels)",
                              problem_mark=self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_undefined(self, node):
        shown = node.tag.replace(_TAG_PREFIX, "!!", 1)
        raise Refused(problem=f"YAML tag {shown} is not allowed in recipes (they hold plain data only)", problem_mark=node.start_mark)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                key = self.construct_object(key_node)
                if key in seen:
                    raise Refused(problem=f"key {key!r} appears twice in one mapping", problem_mark=key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


_StrictLoader.add_constructor(None, _StrictLoader.construct_undefined)


def parse(text: str):
    """The plain data in `text`. Raises Refused for what recipes do not accept, other yaml.YAMLError for bad syntax."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
