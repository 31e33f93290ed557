"""Platform selectors of environment specs: ``# [linux64]`` comments and ``sel(osx)`` items.

A selector is a boolean expression over platform names, ``and``/``or``/``not`` and
parentheses. Names are true or false for a conda platform (subdir) as conda-lock
treats them, e.g. ``linux64`` only for ``linux-64``, ``arm64`` for ``osx-arm64``.

>>> evaluate_selector("linux and not aarch64", "linux-64")
True
>>> evaluate_selector("linux and not aarch64", "linux-aarch64")
False
>>> evaluate_selector("osx or win", "win-64")
True
>>> sorted(true_names("osx-arm64"))
['arm64', 'osx', 'unix']
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

SELECTOR_NAMES: frozenset[str] = frozenset(
    {
        "linux", "linux32", "linux64", "aarch64", "ppc64le", "arm64",
        "osx", "osx64", "win", "win32", "win64", "unix", "x86", "x86_64",
    }
)  # fmt: skip

_UNIX_OSES = frozenset({"linux", "osx", "freebsd", "ios", "iossimulator", "android", "zos"})
_TOKEN = re.compile(r"\s*(?:(\(|\))|([A-Za-z_][A-Za-z0-9_]*)|(\S))")
_KEYWORDS = frozenset({"and", "or", "not"})


class SelectorError(ValueError):
    """A selector expression that cannot be parsed or names an unknown platform name."""


@dataclass(frozen=True, slots=True)
class Name:
    name: str


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr


@dataclass(frozen=True, slots=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple[Expr, ...]


Expr: TypeAlias = Name | Not | BoolOp


def true_names(platform: str) -> frozenset[str]:
    """The selector names that hold on ``platform`` (a conda subdir like ``linux-64``)."""
    os_name, _, arch = platform.partition("-")
    names: set[str] = set()
    if os_name in ("linux", "osx", "win"):
        names.add(os_name)
    if os_name in _UNIX_OSES:
        names.add("unix")
    if os_name in ("linux", "osx", "win") and arch in ("32", "64"):
        names.add("x86")
        if arch == "64":
            names.add("x86_64")
    if platform in ("linux-32", "linux-64", "osx-64", "win-32", "win-64"):
        names.add(platform.replace("-", ""))
    if arch in ("aarch64", "ppc64le", "arm64"):
        names.add(arch)
    return frozenset(names)


def _tokenize(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:  # pragma: no cover - the pattern matches any non-space
            break
        if match.group(3):
            raise SelectorError(f"unexpected character {match.group(3)!r} in selector {text!r}")
        tokens.append(match.group(1) or match.group(2))
        pos = match.end()
    return tokens


class _Parser:
    """Recursive descent over tokens: or -> and -> not -> atom."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _next(self) -> str:
        token = self._peek()
        if token is None:
            raise SelectorError(f"selector {self.text!r} ends unexpectedly")
        self.pos += 1
        return token

    def parse(self) -> Expr:
        if not self.tokens:
            raise SelectorError("empty selector")
        expr = self._or()
        if self._peek() is not None:
            raise SelectorError(f"unexpected {self._peek()!r} in selector {self.text!r}")
        return expr

    def _or(self) -> Expr:
        operands = [self._and()]
        while self._peek() == "or":
            self.pos += 1
            operands.append(self._and())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands))

    def _and(self) -> Expr:
        operands = [self._unary()]
        while self._peek() == "and":
            self.pos += 1
            operands.append(self._unary())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands))

    def _unary(self) -> Expr:
        if self._peek() == "not":
            self.pos += 1
            return Not(self._unary())
        token = self._next()
        if token == "(":
            expr = self._or()
            if self._next() != ")":
                raise SelectorError(f"missing ')' in selector {self.text!r}")
            return expr
        if token == ")" or token in _KEYWORDS:
            raise SelectorError(f"unexpected {token!r} in selector {self.text!r}")
        if token not in SELECTOR_NAMES:
            raise SelectorError(
                f"unknown selector name {token!r} in {self.text!r}; known names: {', '.join(sorted(SELECTOR_NAMES))}"
            )
        return Name(token)


def parse_selector(text: str) -> Expr:
    """Parse a selector expression; :class:`SelectorError` if it is malformed.

    >>> parse_selector("linux and not (aarch64 or ppc64le)")
    BoolOp(op='and', operands=(Name(name='linux'), Not(operand=BoolOp(op='or', \
operands=(Name(name='aarch64'), Name(name='ppc64le'))))))
    """
    return _Parser(text).parse()


def _eval(expr: Expr, names: frozenset[str]) -> bool:
    if isinstance(expr, Name):
        return expr.name in names
    if isinstance(expr, Not):
        return not _eval(expr.operand, names)
    results = (_eval(operand, names) for operand in expr.operands)
    return all(results) if expr.op == "and" else any(results)


def evaluate_selector(text: str, platform: str) -> bool:
    """Whether selector ``text`` holds on ``platform``; :class:`SelectorError` if malformed."""
    return _eval(parse_selector(text), true_names(platform))
