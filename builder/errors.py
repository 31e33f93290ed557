"""Typed errors: one hierarchy, each with a message, a hint and where the problem is.

Every error a user can cause derives from :class:`EnvyardError`. The CLI prints
:meth:`EnvyardError.one_line` and exits with :attr:`EnvyardError.exit_code`; the
API renders :meth:`EnvyardError.to_problem` as RFC 9457 problem details. Nothing
else formats errors.

>>> err = SpecError("unknown key 'dependecies'", file="env.yml", line=3,
...                 field="dependecies", hint="did you mean 'dependencies'?")
>>> err.one_line()
"env.yml:3: dependecies: unknown key 'dependecies' (hint: did you mean 'dependencies'?)"
>>> err.to_problem()["type"]
'https://envyard.dev/problems/invalid-spec'
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Mapping
from os import PathLike
from pathlib import Path
from typing import Any, ClassVar

from envyard.builder.progress import format_size

PROBLEM_BASE = "https://envyard.dev/problems/"


class EnvyardError(Exception):
    """Base of every error shown to a user (CLI line, API problem details)."""

    code: ClassVar[str] = "error"
    title: ClassVar[str] = "envyard error"
    status: ClassVar[int] = 400
    exit_code: ClassVar[int] = 1

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        file: str | PathLike[str] | None = None,
        line: int | None = None,
        field: str | None = None,
        details: Mapping[str, Any] | None = None,
        explanation: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.explanation = explanation
        self.hint = hint
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.details: dict[str, Any] = dict(details or {})

    def location(self) -> str:
        """``file:line: field`` as far as known, or an empty string."""
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line is not None else "")
        elif self.line is not None:
            where = f"line {self.line}"
        if self.field:
            where = f"{where}: {self.field}" if where else self.field
        return where

    def one_line(self) -> str:
        """The error as the CLI prints it: location, message and hint on one line."""
        where = self.location()
        text = f"{where}: {self.message}" if where else self.message
        text = " ".join(text.split())
        if self.hint:
            text += f" (hint: {' '.join(self.hint.split())})"
        return text

    def explanation_lines(self) -> list[str]:
        """The multi-line explanation (a solver's conflict tree, one entry per problem) as the CLI prints it
        below :meth:`one_line`: every line indented by two spaces; empty without an explanation."""
        if not self.explanation:
            return []
        return ["  " + line.rstrip() for line in self.explanation.strip("\n").splitlines()]

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        """RFC 9457 problem details (``application/problem+json``)."""
        problem: dict[str, Any] = {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.message,
        }
        if instance:
            problem["instance"] = instance
        for key in ("hint", "file", "line", "field"):
            value = getattr(self, key)
            if value is not None:
                problem[key] = value
        if self.explanation:
            problem["explanation"] = self.explanation
        if self.details:
            problem["details"] = self.details
        return problem

    def http_headers(self) -> dict[str, str]:
        """Headers the API adds to this error's response (``Retry-After`` of a 429, for instance)."""
        return {}

    def __str__(self) -> str:
        return self.one_line()


class SpecError(EnvyardError):
    """An environment spec (or locked input) that cannot be read."""

    code = "invalid-spec"
    title = "Invalid environment spec"
    status = 422


class SpecLimitError(SpecError):
    """A spec past one of the parser's limits (size, nesting depth, nodes, keys per mapping, list length)."""

    code = "spec-limit-exceeded"
    title = "Environment spec exceeds a limit"


class SpecIncludeError(SpecError):
    """A spec submitted to the service that would read a file (``-r``, ``-c``, ``-e``, local paths)."""

    code = "spec-include-refused"
    title = "Submitted specs cannot include files"


class ForbiddenUrlError(SpecError):
    """A channel, index or link URL outside what the service may fetch (loopback, private, link-local, ...)."""

    code = "forbidden-url"
    title = "URL not allowed"


class ChannelError(EnvyardError):
    """A channel that cannot be resolved or whose repodata cannot be fetched."""

    code = "channel-unavailable"
    title = "Channel unavailable"
    status = 424


class SolveError(EnvyardError):
    """The conda solver found no solution."""

    code = "unsatisfiable"
    title = "Environment cannot be solved"
    status = 422


class MissingPackagesError(SolveError):
    """Requested specs that no record in the channels searched can satisfy (found before solving).

    The same problem type as :class:`SolveError` (the request is unsatisfiable); ``details.missing``
    lists each spec with the nearest available versions or similar names.
    """

    title = "Requested packages are not available"


class MissingVirtualPackageError(SolveError):
    """The solve failed because a virtual package (``__cuda``, ``__glibc`` ...) is absent."""

    code = "missing-virtual-package"
    title = "A virtual package is missing"


class PipResolutionError(EnvyardError):
    """The pip section of a spec could not be resolved."""

    code = "pip-unresolvable"
    title = "pip requirements cannot be resolved"
    status = 422


class SdistNotAllowedError(PipResolutionError):
    """A pip requirement has only a source distribution, and building sdists (which runs their code) is off."""

    code = "sdist-not-allowed"
    title = "a pip package needs a source build, which is not allowed"


class LockfileError(EnvyardError):
    """A lockfile that cannot be read, or a lock that is not closed."""

    code = "invalid-lockfile"
    title = "Invalid lockfile"
    status = 422


class StaleLockError(EnvyardError):
    """``envyard lock --check``: the lock on disk does not match the spec."""

    code = "stale-lock"
    title = "Lock is out of date"
    status = 409
    exit_code = 2


class MissingLockError(StaleLockError):
    """``envyard lock --check``: there is no lock to check (same exit code as a stale one: both need a lock)."""

    code = "missing-lock"
    title = "Lock is missing"


class CiFailedError(EnvyardError):
    """``envyard ci``: a relock or an image build of one of the environments failed (the report names which)."""

    code = "ci-failed"
    title = "CI run failed"
    status = 422
    exit_code = 1


class UsageError(EnvyardError):
    """A command line that cannot be run as given (options that exclude each other, an unknown name)."""

    code = "usage"
    title = "Invalid command line"
    status = 400
    exit_code = 64


class PackageIntegrityError(EnvyardError):
    """A package archive whose bytes do not match the hash the lock pins."""

    code = "package-integrity"
    title = "Package does not match the lock"
    status = 422
    exit_code = 3


class UnsafePackageError(EnvyardError):
    """A package that would write outside its prefix (``../``, absolute paths, symlinks out)."""

    code = "unsafe-package"
    title = "Package writes outside the environment"
    status = 422
    exit_code = 3


class InstallError(EnvyardError):
    """An install that could not complete; nothing half-built is left at the target."""

    code = "install-failed"
    title = "Environment could not be installed"
    status = 500
    exit_code = 4


class ImageError(EnvyardError):
    """An image (or archive) that cannot be built from the given lock and options."""

    code = "image-failed"
    title = "Image could not be built"
    status = 422
    exit_code = 4


class RegistryError(EnvyardError):
    """A registry that refuses, cannot be reached, or answers something unexpected."""

    code = "registry-error"
    title = "Registry request failed"
    status = 502
    exit_code = 5


class NotFoundError(EnvyardError):
    """A namespace, environment, build or artifact that does not exist (or is not visible to the caller)."""

    code = "not-found"
    title = "Not found"
    status = 404
    exit_code = 6


class ConflictError(EnvyardError):
    """A request that contradicts the current state (a name taken, a build already finished)."""

    code = "conflict"
    title = "Conflict with the current state"
    status = 409
    exit_code = 7


class LeaseLostError(ConflictError):
    """A worker acting on a build whose lease it no longer holds (expired, or the build was requeued)."""

    code = "lease-lost"
    title = "Build lease lost"


class BuildCanceledError(ConflictError):
    """A worker completing a build whose cancel was accepted first: the build ended canceled, not completed."""

    code = "build-canceled"
    title = "Build was canceled"


class AuthenticationError(EnvyardError):
    """No token, or a token the server does not know."""

    code = "unauthenticated"
    title = "Authentication required"
    status = 401
    exit_code = 8


class PermissionDeniedError(EnvyardError):
    """A known token whose role does not allow the action."""

    code = "forbidden"
    title = "Permission denied"
    status = 403
    exit_code = 8


class StorageError(EnvyardError):
    """The artifact store cannot be reached or refused an operation."""

    code = "storage-unavailable"
    title = "Artifact store unavailable"
    status = 503
    exit_code = 9


class ArtifactIntegrityError(EnvyardError):
    """Uploaded bytes whose sha256 or size differ from what the uploader declared; nothing was stored."""

    code = "artifact-integrity"
    title = "Artifact does not match its digest"
    status = 422
    exit_code = 3


class ServiceError(EnvyardError):
    """The envyard server cannot be reached, or answered something that is not problem details."""

    code = "service-unavailable"
    title = "envyard server unavailable"
    status = 503
    exit_code = 9


class BuildTimeoutError(EnvyardError):
    """A build that ran past the time limit an admin set."""

    code = "build-timeout"
    title = "Build exceeded its time limit"
    status = 504
    exit_code = 4


class ConfigError(EnvyardError):
    """A setting (``ENVYARD_*``, a command-line option, a file the server keeps) that cannot be used."""

    code = "config-invalid"
    title = "Invalid configuration"
    status = 500
    exit_code = 78


class TargetError(EnvyardError):
    """A registry target that cannot be used as given (URL, repository template, credentials)."""

    code = "invalid-registry-target"
    title = "Invalid registry target"
    status = 422
    exit_code = 78


class TooManyRequestsError(EnvyardError):
    """A per-token limit reached (concurrent log streams, submissions being checked, builds waiting)."""

    code = "too-many-requests"
    title = "Too many requests"
    status = 429
    exit_code = 9

    def __init__(self, message: str, *, retry_after: int = 1, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after

    @classmethod
    def limit_reached(cls, what: str, limit: str, maximum: int, in_use: int, retry_after: int) -> TooManyRequestsError:
        """``what`` (e.g. "log streams open") is at ``maximum`` for this token; ``limit`` names the setting."""
        return cls(f"too many {what} for this token: {in_use} of {maximum} allowed",
                   hint=f"wait for one to finish and retry after {retry_after} s, or ask an admin to raise "
                   f"ENVYARD_{limit.upper()}", field=limit, retry_after=retry_after,
                   details={"limit": limit, "maximum": maximum, "in_use": in_use, "retry_after": retry_after})

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class DataError(EnvyardError):
    """A DVC data repository, revision, path or remote that cannot be used as given."""

    code = "data-error"
    title = "Data cannot be resolved"
    status = 422


class UnknownRevisionError(DataError):
    """A git revision (tag, branch, commit) that the data repository does not have."""

    code = "unknown-revision"
    title = "Unknown revision"
    status = 404
    exit_code = 6


class UntrackedPathError(DataError):
    """A path that DVC does not track at the given revision (absent, or a plain git file)."""

    code = "path-not-tracked"
    title = "Path is not tracked by DVC"


class UnknownRemoteError(DataError):
    """A DVC remote name the repository does not configure (or no default remote at all)."""

    code = "unknown-remote"
    title = "Unknown DVC remote"
    status = 404
    exit_code = 6


class DataUnavailableError(DataError):
    """Data that cannot be fetched: the object is missing from the remote and the cache, or the remote refuses."""

    code = "data-unavailable"
    title = "Data cannot be fetched"
    status = 424
    exit_code = 6


class DataIntegrityError(EnvyardError):
    """A data file whose bytes do not hash to what the snapshot pins (tampered cache, changed file)."""

    code = "data-integrity"
    title = "Data does not match the snapshot"
    status = 422
    exit_code = 3


class ManifestError(EnvyardError):
    """A run manifest that cannot be read or is refused (schema, secret-looking variables)."""

    code = "invalid-run-manifest"
    title = "Invalid run manifest"
    status = 422


class RunIntegrityError(EnvyardError):
    """A lock or image whose bytes do not match the digest a run manifest pins: the command is not started."""

    code = "run-integrity"
    title = "Run input does not match the manifest"
    status = 422
    exit_code = 3


class RunFailedError(EnvyardError):
    """A run whose command could not start or exited with a non-zero status."""

    code = "run-failed"
    title = "Run failed"
    status = 500
    exit_code = 4


class DriftError(EnvyardError):
    """``envyard verify``: something a run manifest pins re-derives to a different digest."""

    code = "drift"
    title = "Run manifest drifted"
    status = 409
    exit_code = 2


class QuotaExceededError(EnvyardError):
    """A namespace's storage quota used up (403); ``details`` name the quota, its limit and the current use."""

    code = "quota-exceeded"
    title = "Quota exceeded"
    status = 403
    exit_code = 8


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "(os error 28)", "(os error 122)")


def free_bytes(path: str | PathLike[str]) -> int | None:
    """Free space (for unprivileged users) on the filesystem holding ``path`` or its nearest existing parent."""
    here = Path(path).absolute()
    for candidate in (here, *here.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


class DiskFullError(EnvyardError):
    """A write that failed because the filesystem (or the user's quota) is full: not a bug, an operator's matter."""

    code = "disk-full"
    title = "No space left on the device"
    status = 507
    exit_code = 4

    @classmethod
    def at(cls, path: str | PathLike[str] | None, reason: str = "no space left on device") -> DiskFullError:
        """The error for a full filesystem holding ``path``, with the free space measured now."""
        free = free_bytes(path) if path is not None else None
        where = f"writing {os.fspath(path)}" if path is not None else "writing a file of the build"
        space = f"{format_size(free)} free there now" if free is not None else "free space unknown"
        return cls(f"{reason.lower()} {where} ({space})",
                   hint="free space there (or raise the quota), or give the worker a work directory on a larger "
                   "filesystem; then rebuild",
                   details={"path": os.fspath(path) if path is not None else None, "free_bytes": free})

    @classmethod
    def find(cls, exc: BaseException, default_path: str | PathLike[str] | None = None) -> DiskFullError | None:
        """The DiskFullError ``exc`` amounts to: an OSError ENOSPC/EDQUOT (or a library's error saying so) in its
        cause or context chain; None when the failure is something else."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            if isinstance(current, DiskFullError):
                return current
            if (isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS) or any(
                    marker in str(current).lower() for marker in _DISK_FULL_TEXT):
                filename = current.filename if isinstance(current, OSError) else None
                path = os.fsdecode(filename) if isinstance(filename, str | bytes) else default_path
                reason = current.strerror if isinstance(current, OSError) and current.strerror else ""
                return cls.at(path, reason or "no space left on device")  # reason: "Disk quota exceeded" too
            current = current.__cause__ or current.__context__
        return None


#: Every exit code of the ``envyard`` command, in the order ``envyard --help`` and the README list them.
EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success; `lock --check`: the lock is fresh; `lock diff --exit-code`: no differences"),
    (1, "an error in the input: spec, lockfile, channel, solve, pip; `lock diff --exit-code`: differences; "
        "`ci`: a solve or build of an environment failed"),
    (2, "`lock --check`, `ci --check`: a lock is stale or missing; `verify`: a run manifest drifted"),
    (3, "a package, artifact, lock, image or data file does not match its hash, or writes outside its prefix"),
    (4, "an install, image, build or run failed, or ran past its time limit"),
    (5, "a registry refused or could not be reached"),
    (6, "not found: namespace, environment, build, artifact, git revision, DVC remote or data object"),
    (7, "conflict with the current state"),
    (8, "authentication or permission"),
    (9, "the envyard server or its artifact store is unavailable, or a per-token limit was reached (retry)"),
    (10, "a followed build was canceled"),
    (64, "usage: unknown option, missing or extra argument, options that exclude each other"),
    (70, "internal error (a bug in envyard; ENVYARD_DEBUG=1 shows the traceback)"),
    (78, "configuration: an ENVYARD_* setting or a registry target cannot be used"),
    (130, "interrupted"),
)
