"""A tiny, safe arithmetic language for derived parameters and constraints of a sweep.

``"90 - groups.fc_pim.count"`` or ``"groups.fc_pim.count + groups.attn.count <= 90"``: numbers,
names of other sweep parameters (dotted paths), ``+ - * / // %``, unary minus, comparisons
(``< <= > >= == !=``, chained) and ``and`` / ``or`` / ``not``. Nothing else: no calls, no
attributes, no subscripts, no strings, so an expression cannot run code. It is parsed with
:mod:`ast` once, checked node by node, and evaluated by walking the tree.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from pimserve.errors import ConfigurationError, SpecError

#: a dotted parameter path not preceded by a letter, digit, '_' or '.' (so the 'e3' of
#: '1e3' is not a name)
_NAME = re.compile(r"(?<![\w.])[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_KEYWORDS = frozenset({"and", "or", "not"})
_MAX_TEXT = 1000  # characters of one expression

_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
}
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne,
}
ACCEPTED = ("numbers, parameter names, + - * / // %, unary -, comparisons < <= > >= == !=, "
            "and, or, not, parentheses")


class Expr:
    """A parsed expression over other parameters' values.

    ``text`` is what the user wrote; :attr:`names` the parameter paths it reads (in order of
    first use). :meth:`evaluate` returns an int, a float or a bool.
    """

    def __init__(self, text: str, where: str):
        if not isinstance(text, str) or not text.strip():
            raise SpecError(f"{where}: an expression must be a non-empty string (got {text!r})")
        if len(text) > _MAX_TEXT:
            raise SpecError(f"{where}: expression longer than {_MAX_TEXT} characters")
        self.text, self.where = text, where
        names: list[str] = []

        def sub(m: re.Match[str]) -> str:
            word = m.group(0)
            if word in _KEYWORDS:
                return word
            if word not in names:
                names.append(word)
            return f"_v{names.index(word)}"

        coded = _NAME.sub(sub, text.strip())
        try:
            tree = ast.parse(coded, mode="eval")
        except SyntaxError:
            raise SpecError(f"{where}: cannot parse expression '{text}' (accepted: "
                            f"{ACCEPTED})") from None
        self._check(tree.body)
        self._tree = tree.body
        self.names: tuple[str, ...] = tuple(names)

    def _check(self, node: ast.AST) -> None:
        ok = (
            (isinstance(node, ast.BinOp) and type(node.op) in _BINARY)
            or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd
                                                             | ast.Not))
            or (isinstance(node, ast.Compare) and all(type(o) in _COMPARE for o in node.ops))
            or isinstance(node, ast.BoolOp)
            or (isinstance(node, ast.Constant) and isinstance(node.value, int | float)
                and not isinstance(node.value, bool))
            or (isinstance(node, ast.Name) and re.fullmatch(r"_v\d+", node.id) is not None)
        )
        if not ok:
            what = type(node).__name__
            if isinstance(node, ast.BinOp | ast.UnaryOp):
                what = type(node.op).__name__
            raise SpecError(f"{self.where}: expression '{self.text}' uses {what}, which is not "
                            f"allowed (accepted: {ACCEPTED})")
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.operator | ast.unaryop | ast.cmpop | ast.boolop
                          | ast.expr_context):
                continue
            self._check(child)

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """The expression's value given each name's value; a division by zero or a name
        that is not a number raises ConfigurationError naming the expression."""
        args = []
        for n in self.names:
            v = values[n]
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ConfigurationError(f"{self.where}: expression '{self.text}' needs a "
                                         f"number for '{n}' (got {v!r})")
            args.append(v)
        try:
            out = self._eval(self._tree, args)
        except ZeroDivisionError:
            raise ConfigurationError(f"{self.where}: expression '{self.text}' divides by "
                                     f"zero at {dict(zip(self.names, args, strict=True))}"
                                     ) from None
        if isinstance(out, float) and not math.isfinite(out):
            raise ConfigurationError(f"{self.where}: expression '{self.text}' is not finite")
        return out

    def _eval(self, node: ast.AST, args: list[Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return args[int(node.id[2:])]
        if isinstance(node, ast.BinOp):
            return _BINARY[type(node.op)](self._eval(node.left, args),
                                          self._eval(node.right, args))
        if isinstance(node, ast.UnaryOp):
            v = self._eval(node.operand, args)
            if isinstance(node.op, ast.Not):
                return not v
            return -v if isinstance(node.op, ast.USub) else +v
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, args)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = self._eval(right_node, args)
                if not _COMPARE[type(op)](left, right):
                    return False
                left = right
            return True
        assert isinstance(node, ast.BoolOp)
        if isinstance(node.op, ast.And):
            return all(self._eval(v, args) for v in node.values)
        return any(self._eval(v, args) for v in node.values)

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"
