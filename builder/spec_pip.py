"""The pip part of environment specs: requirement lines, index options and ``-r`` includes.

Lines follow pip's requirements-file syntax (conda hands the ``- pip:`` list to pip
as such a file). What a build service cannot reproduce (editable installs, local
paths, constraints files) is a :class:`~builder.errors.SpecError`.

>>> pip = PipCollector(base_dir=None, environ={})
>>> pip.add_line("--pre --index-url https://example.org/simple", file=None, line=1, spec_line=1, selector=None)
>>> pip.add_line("flit-core === 3.9.0 --hash=sha256:1234", file=None, line=2, spec_line=2, selector=None)
>>> section = pip.build()
>>> section.index_url, [r.text for r in section.requirements]
('https://example.org/simple', ['flit-core === 3.9.0'])
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidSdistFilename, InvalidWheelFilename, parse_sdist_filename, parse_wheel_filename

from envyard.builder.errors import SpecError, SpecIncludeError

__all__ = [
    "INCLUDE_HINT", "MAX_INCLUDE_DEPTH", "PipCollector", "PipRequirement", "PipSection", "logical_lines",
    "pip_canonical", "read_text", "redact_url",
]  # fmt: skip

MAX_INCLUDE_DEPTH = 5
INCLUDE_HINT = (
    "a spec sent to a server cannot read files on it: inline the requirements into the pip section "
    "(`envyard env create -f SPEC` does this for -r files on your disk)"
)
LOCAL_MESSAGE = "editable/local pip requirements cannot be built by a service"
LOCAL_HINT = "publish the package to an index or add it as a wheel URL"

_COMMENT = re.compile(r"(^|\s+)#.*$")
_LOCAL = re.compile(r"^(\.{1,2}($|[/\\])|[/\\~]|[A-Za-z]:[/\\]|file:)", re.IGNORECASE)
_VCS = re.compile(r"^(git|hg|svn|bzr)\+", re.IGNORECASE)
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_CONDA_STYLE = re.compile(r"^[A-Za-z0-9_.-]+(\[[^\]]*\])?\s*=\s*[^=\s]")
_VALUE_OPTIONS = {
    "-i": "index", "--index-url": "index", "--extra-index-url": "extra", "-f": "find",
    "--find-links": "find", "-r": "include", "--requirement": "include", "--trusted-host": "ignore",
}  # fmt: skip
_FLAGS = frozenset({"--pre", "--prefer-binary"})
_PER_REQUIREMENT = frozenset({"--hash", "--config-settings", "--global-option", "--install-option"})


@dataclass(frozen=True, slots=True)
class PipRequirement:
    """One PEP 508 requirement of the pip section (per-requirement options stripped)."""

    text: str
    line: int | None
    selector: str | None = None


@dataclass(frozen=True, slots=True)
class PipSection:
    """The pip part of a spec: requirements and the index options that apply to them."""

    requirements: tuple[PipRequirement, ...]
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()


def read_text(path: Path, *, file: str | None, line: int | None, field: str | None = None) -> str:
    """A UTF-8 file's text; SpecError (at ``file:line``) if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if line is None:  # the spec itself, as named on the command line
            hint = (f"check the path: a relative path is resolved against the current directory, {Path.cwd()}"
                    if not path.is_absolute() else "check the path")
        else:  # a file the spec names, already joined to the spec's directory
            hint = f"check the path: relative paths in a spec are resolved against its directory, {path.parent}"
        raise SpecError(f"file not found: {path}", file=file or str(path), line=line, field=field,
                        hint=hint) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read {path}: {exc}", file=file or str(path), line=line, field=field) from None


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each line, backslash continuations joined.

    >>> list(logical_lines("a \\\\\\n  >=1\\nb"))
    [(1, 'a   >=1'), (3, 'b')]
    """
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        start = start or number
        if raw.endswith("\\") and not _COMMENT.search(raw):
            parts.append(raw[:-1])
            continue
        parts.append(raw)
        yield start, "".join(parts)
        parts, start = [], 0
    if parts:
        yield start, "".join(parts)


def redact_url(url: str) -> str:
    """``url`` without user and password.

    >>> redact_url("http://user:pw@private-pypi.org:8080/simple")
    'http://private-pypi.org:8080/simple'
    """
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def pip_canonical(pip: PipSection, platform: str | None, holds: Callable[[str | None, str], bool]) -> dict[str, Any]:
    """Canonical JSON-able form of a pip section (requirements sorted, credentials removed)."""

    def norm(text: str) -> str:
        return str(Requirement(text))

    requirements: list[Any]
    if platform is None:
        requirements = sorted(
            ({"text": norm(r.text), "selector": r.selector} for r in pip.requirements),
            key=lambda r: (r["text"], r["selector"] or ""),
        )
    else:
        requirements = sorted(norm(r.text) for r in pip.requirements if holds(r.selector, platform))
    return {
        "requirements": requirements,
        "index_url": redact_url(pip.index_url) if pip.index_url else None,
        "extra_index_urls": [redact_url(u) for u in pip.extra_index_urls],
        "find_links": [redact_url(u) for u in pip.find_links],
    }


class PipCollector:
    """Accumulates pip lines (from a spec's ``- pip:`` list or a requirements file) into a section."""

    def __init__(self, *, base_dir: Path | None, environ: Mapping[str, str], allow_includes: bool = False) -> None:
        """``allow_includes``: ``-r FILE`` reads FILE (a local, trusted spec); else it is a SpecIncludeError."""
        self.found = False
        self.base_dir = base_dir
        self.allow_includes = allow_includes
        self.environ = environ
        self.requirements: list[PipRequirement] = []
        self.index_url: str | None = None
        self.extra_index_urls: list[str] = []
        self.find_links: list[str] = []

    def build(self, extra_index_urls: list[str] | tuple[str, ...] = ()) -> PipSection:
        extra = tuple(dict.fromkeys([*self.extra_index_urls, *extra_index_urls]))
        return PipSection(tuple(self.requirements), self.index_url, extra, tuple(dict.fromkeys(self.find_links)))

    def add_file_text(
        self,
        text: str,
        *,
        file: str | None,
        spec_line: int | None,
        selector: str | None,
        base_dir: Path | None = None,
        depth: int = 0,
    ) -> None:
        """Add every line of a requirements file."""
        for number, line_text in logical_lines(text):
            self.add_line(
                line_text,
                file=file,
                line=number,
                spec_line=spec_line,
                selector=selector,
                base_dir=base_dir,
                depth=depth,
            )

    def add_line(
        self,
        text: str,
        *,
        file: str | None,
        line: int | None,
        spec_line: int | None,
        selector: str | None,
        base_dir: Path | None = None,
        depth: int = 0,
    ) -> None:
        """Add one line: options, a ``-r`` include or a requirement. ``spec_line`` is the spec's line."""
        text = _COMMENT.sub("", text).strip()
        at = spec_line if spec_line is not None else line
        if not text:
            return
        if text.startswith("-"):
            self._options(text, file, line, at, selector, base_dir or self.base_dir, depth)
        else:
            self.requirements.append(PipRequirement(_requirement(text, file, line), at, selector))

    def _options(
        self,
        text: str,
        file: str | None,
        line: int | None,
        at: int | None,
        selector: str | None,
        base_dir: Path | None,
        depth: int,
    ) -> None:
        def fail(message: str, hint: str | None = None) -> SpecError:
            return SpecError(message, file=file, line=line, field="pip", hint=hint)

        try:
            tokens = shlex.split(text)
        except ValueError as exc:
            raise fail(f"cannot split pip options {text!r}: {exc}") from None
        pos = 0
        while pos < len(tokens):
            token = tokens[pos]
            pos += 1
            name, value = _split_option(token)
            if name in ("-e", "--editable"):
                raise fail(f"{LOCAL_MESSAGE}: {text!r}", LOCAL_HINT)
            if name in ("-c", "--constraint", "--no-index"):
                raise fail(
                    f"pip option {name} is not supported in a spec", "put constraints into the requirements themselves"
                )
            if name in _FLAGS:
                continue
            kind = _VALUE_OPTIONS.get(name)
            if kind is None:
                raise fail(
                    f"unsupported pip option {name!r}",
                    "supported: --index-url, --extra-index-url, --find-links, -r, --pre",
                )
            if value is None:
                if pos >= len(tokens):
                    raise fail(f"pip option {name} needs a value")
                value, pos = tokens[pos], pos + 1
            value = self._expand(value, fail)
            if kind == "include":
                self._include(value, file, line, at, selector, base_dir, depth)
            elif kind != "ignore" and not re.match(r"^https?://", value):
                raise fail(
                    f"{LOCAL_MESSAGE}: {name} {value!r}"
                    if kind == "find"
                    else f"{name} must be an http(s) URL, not {value!r}",
                    LOCAL_HINT if kind == "find" else None,
                )
            elif kind == "index":
                self.index_url = value
            elif kind == "extra":
                self.extra_index_urls.append(value)
            elif kind == "find":
                self.find_links.append(value)

    def _expand(self, value: str, fail: Callable[[str, str | None], SpecError]) -> str:
        def sub(match: re.Match[str]) -> str:
            if match.group(1) not in self.environ:
                raise fail(
                    f"environment variable {match.group(1)!r} used in {value!r} is not set",
                    f"set {match.group(1)} in the environment of the build",
                )
            return self.environ[match.group(1)]

        return _ENV.sub(sub, value)

    def _include(
        self,
        value: str,
        file: str | None,
        line: int | None,
        at: int | None,
        selector: str | None,
        base_dir: Path | None,
        depth: int,
    ) -> None:
        if _URL.match(value):
            raise SpecError(
                f"remote requirements files are not supported: {value!r}",
                file=file,
                line=line,
                field="pip",
                hint="copy the requirements into the spec",
            )
        if base_dir is None:
            raise SpecError(
                f"cannot resolve '-r {value}' without the spec's file path",
                file=file,
                line=line,
                field="pip",
                hint="read the spec from a file (read_spec) or inline the requirements",
            )
        if not self.allow_includes:
            raise SpecIncludeError(
                f"'-r {value}' includes a file: a submitted spec cannot include files",
                file=file,
                line=line,
                field="pip",
                hint=INCLUDE_HINT,
            )
        if depth >= MAX_INCLUDE_DEPTH:
            raise SpecError(
                f"'-r {value}' nests requirement files more than {MAX_INCLUDE_DEPTH} deep",
                file=file,
                line=line,
                field="pip",
                hint="check for a cycle of -r includes",
            )
        path = base_dir / value
        root = (self.base_dir or base_dir).resolve()
        if not path.resolve().is_relative_to(root):
            raise SpecError(
                f"'-r {value}' points outside the spec's directory",
                file=file,
                line=line,
                field="pip",
                hint="keep included requirement files next to the spec",
            )
        text = read_text(path, file=file, line=line, field="pip")
        self.add_file_text(text, file=str(path), spec_line=at, selector=selector, base_dir=path.parent, depth=depth + 1)


def _split_option(token: str) -> tuple[str, str | None]:
    if token.startswith("--"):
        name, eq, value = token.partition("=")
        return name, value if eq else None
    if len(token) > 2:
        return token[:2], token[2:].lstrip("=")
    return token, None


def _requirement(text: str, file: str | None, line: int | None) -> str:
    """The PEP 508 text of a requirement line, per-requirement options (``--hash``) stripped."""

    def fail(message: str, hint: str | None = None) -> SpecError:
        return SpecError(message, file=file, line=line, field="pip", hint=hint)

    tokens = text.split()
    args = tokens[: next((i for i, t in enumerate(tokens) if t.startswith("-")), len(tokens))]
    for token in tokens[len(args) :]:
        if token.startswith("-") and token.partition("=")[0] not in _PER_REQUIREMENT:
            raise fail(f"unsupported option {token!r} in pip requirement {text!r}")
    req = " ".join(args)
    if _LOCAL.match(req):
        raise fail(f"{LOCAL_MESSAGE}: {req!r}", LOCAL_HINT)
    if _VCS.match(req) or _URL.match(req):
        req = _name_url(req, fail)
    try:
        parsed = Requirement(req)
    except InvalidRequirement as exc:
        hint = (
            "pip uses '==' for exact versions, e.g. 'numpy==1.26'"
            if _CONDA_STYLE.match(req)
            else "pip lines are PEP 508 requirements like 'requests>=2.31' or 'name @ https://.../x.whl'"
        )
        raise fail(f"invalid pip requirement {req!r}: {str(exc).splitlines()[0]}", hint) from None
    bare_url = _VCS.sub("", parsed.url or "")
    if parsed.url is not None and (_LOCAL.match(bare_url) or not _URL.match(bare_url)):
        raise fail(f"{LOCAL_MESSAGE}: {req!r}", LOCAL_HINT)
    return req


def _name_url(url: str, fail: Callable[[str, str | None], SpecError]) -> str:
    """``name @ url`` for a bare URL whose name is known (``#egg=``, wheel or sdist file name)."""
    egg = re.search(r"[#&]egg=([A-Za-z0-9_.-]+)", url)
    if egg:
        return f"{egg.group(1)} @ {url}"
    filename = urlsplit(url).path.rsplit("/", 1)[-1]
    if not _VCS.match(url):
        try:
            return f"{parse_wheel_filename(filename)[0]} @ {url}"
        except InvalidWheelFilename:
            pass
        try:
            return f"{parse_sdist_filename(filename)[0]} @ {url}"
        except InvalidSdistFilename:
            pass
    guess = re.sub(r"(\.git)?(@.*)?$", "", filename) or "name"
    raise fail(f"pip requirement {url!r} has no package name", f"write it as '{guess} @ {url}'")
