"""One build, run in a child process: ``python -m envyard.worker.job JOB_DIR [--events-fd N]``.

Reads ``JOB_DIR/job.json`` (:class:`JobSpec`), runs the stages ``solving`` (lock files,
pinned environment.yml exports), ``installing`` (per-platform prefixes, conda-pack style
archives) and ``imaging`` (an OCI image and SBOMs), and writes every artifact under
``JOB_DIR/out/`` with ``JOB_DIR/out/manifest.json`` (:class:`JobManifest`) listing them.
Progress goes as JSON lines to fd N (:class:`JsonLinesEvents`) and as text to stderr.
Everything the build writes stays in ``JOB_DIR`` (temporary files in ``JOB_DIR/tmp``)
except the shared caches named by :class:`~builder.settings.Settings`.

Exit codes: 0 built, 1 an :class:`~builder.errors.EnvyardError` (error event with its code),
70 an unexpected exception (code ``internal``), 130 cancelled (SIGTERM/SIGINT, code ``cancelled``).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, Literal

from envyard.builder.errors import DiskFullError, EnvyardError, ImageError, InstallError
from envyard.builder.model import EnvironmentLock
from envyard.builder.progress import Stage
from envyard.builder.settings import Settings
from envyard.worker.job_io import (
    MANIFEST_PATH,
    ArtifactFile,
    ArtifactKind,
    EventSink,
    EventsReporter,
    JobManifest,
    JobSpec,
    JsonLinesEvents,
    LockedPackageRow,
)

__all__ = ["ArtifactFile", "EventSink", "JobManifest", "JobSpec", "JsonLinesEvents", "LockedPackageRow", "main",
           "run_job"]

EXIT_ERROR, EXIT_INTERNAL, EXIT_CANCELLED = 1, 70, 130


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def run_job(job: JobSpec, job_dir: Path, settings: Settings, events: EventSink) -> JobManifest:
    """Run the build described by ``job`` in ``job_dir``; write ``out/manifest.json`` and return the manifest."""
    build = _Build(job, job_dir.absolute(), settings, events)
    try:
        manifest = build.run()
    except EnvyardError as err:
        for base in (build.job_dir / "input", build.job_dir):  # the user's file name, not the worker's path
            if err.file and Path(err.file).is_relative_to(base):
                err.file = str(Path(err.file).relative_to(base))
        _write_partial(build)
        raise
    except Exception:
        _write_partial(build)
        raise
    tmp = build.out / "manifest.json.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
    tmp.replace(build.job_dir / MANIFEST_PATH)
    return manifest


PARTIAL_PATH = "out/partial.json"
LOCK_KINDS = frozenset({"conda-lock", "pixi-lock", "explicit", "environment"})


def _write_partial(build: _Build) -> None:
    """A build that fails after solving: ``out/partial.json`` (a :class:`JobManifest`) lists its lock files, which
    the worker uploads with the failure so that the user can inspect what was solved."""
    locks = [a for a in build.artifacts if a.kind in LOCK_KINDS]
    lock_file = build.out / "lock" / "conda-lock.yml"
    if not locks or not lock_file.is_file():
        return
    partial = JobManifest(artifacts=locks, packages=_package_rows(build.lock), platforms=list(build.platforms),
                          image_digest=None, lock_sha256=file_sha256(lock_file))
    (build.job_dir / PARTIAL_PATH).write_text(partial.model_dump_json(indent=2) + "\n", encoding="utf-8")


class _Build:
    def __init__(self, job: JobSpec, job_dir: Path, settings: Settings, events: EventSink) -> None:
        self.job, self.job_dir, self.settings, self.events = job, job_dir, settings, events
        self.out = job_dir / "out"
        self.reporter = EventsReporter(events, str(job_dir))
        self.artifacts: list[ArtifactFile] = []
        self.lock = EnvironmentLock(platforms={})
        self.platforms: tuple[str, ...] = ()

    def add(self, kind: ArtifactKind, name: str, path: Path, media_type: str, platform: str | None = None) -> None:
        self.artifacts.append(ArtifactFile(kind=kind, name=name, path=path.relative_to(self.job_dir).as_posix(),
                                           sha256=file_sha256(path), size=path.stat().st_size,
                                           media_type=media_type, platform=platform))

    def run(self) -> JobManifest:
        self.reporter.enter("solving")
        self.solve()
        self.reporter.enter("installing")
        self.install()
        image_digest = None
        if self.job.image or self.job.sbom:
            self.reporter.enter("imaging")
            title, tag = _image_title(self.job, self.lock)
            image_digest = self.image(title, tag) if self.job.image else None
            if self.job.sbom:
                self.sboms(self.job.sbom, title)
        return JobManifest(artifacts=self.artifacts, packages=_package_rows(self.lock), platforms=list(self.platforms),
                           image_digest=image_digest, lock_sha256=file_sha256(self.out / "lock" / "conda-lock.yml"))

    def solve(self) -> None:
        from envyard.builder.errors import SpecError
        from envyard.builder.export import pinned_environment_yaml
        from envyard.builder.lockfiles import CONDA_LOCK_FILE, PIXI_LOCK_FILE, explicit_file_name, read_lockfile
        from envyard.builder.pipeline import lock_to_directory

        spec_path = self.job_dir / "input" / self.job.spec_filename
        spec_path.parent.mkdir(parents=True, exist_ok=True)
        spec_path.write_text(self.job.spec_text, encoding="utf-8")
        # environ={}: ${VAR} in a user's spec is never expanded from the worker's environment
        # allow_includes=False: a submitted spec never reads the worker's files (pip -r)
        from envyard.builder.policy import PolicyViolationError, check_lock, with_required

        policy = self.job.policy
        result = lock_to_directory(spec_path, self.out / "lock", _lock_options(self.job, self.settings),
                                   cache_dir=self.settings.cache_dir, environ={}, reporter=self.reporter,
                                   allow_includes=False, adjust=lambda spec: with_required(spec, policy))
        files = result.files
        # everything after the lock is made from the lockfile's bytes, as a rebuild from that file is (`envyard
        # verify --rebuild`, `envyard image`): the solver's in-memory records carry more (license, timestamp, the
        # order of depends) and would give the image another digest
        self.lock = read_lockfile(files[CONDA_LOCK_FILE])
        if violations := check_lock(self.lock, policy):  # a denied package pulled in by a dependency
            raise PolicyViolationError(violations, file=self.job.spec_filename)
        missing = [p for p in self.job.platforms if p not in self.lock.platforms]
        if missing:  # a re-exported lock keeps its own platforms
            raise SpecError(f"the lock has no {', '.join(missing)} (it has {', '.join(self.lock.platform_names)})",
                            field="platforms", hint="build the lock's platforms, or lock the spec for those")
        self.platforms = tuple(dict.fromkeys(self.job.platforms)) or self.lock.platform_names
        self.add("conda-lock", CONDA_LOCK_FILE, files[CONDA_LOCK_FILE], "application/yaml")
        self.add("pixi-lock", PIXI_LOCK_FILE, files[PIXI_LOCK_FILE], "application/yaml")
        for platform in self.lock.platform_names:
            self.add("explicit", f"explicit-{platform}.txt", files[explicit_file_name(platform)], "text/plain",
                     platform)
            exported = self.out / f"environment-{platform}.yml"
            exported.write_text(pinned_environment_yaml(self.lock, platform), encoding="utf-8")
            self.add("environment", exported.name, exported, "application/yaml", platform)

    def install(self) -> None:
        """Per platform: install (for the archive's placeholder prefix) and pack.

        Without an archive but with an image, the image stage's install is the only one: the
        image's prefix is relocated for ``env_prefix``, the archive's for a long placeholder.
        """
        from envyard.builder.install import host_platform, install_lock
        from envyard.builder.pack import PACKED_PREFIX, pack_prefix

        job, host = self.job, host_platform()
        for platform in self.platforms:
            if self.lock.platforms[platform].pip and platform != host:
                raise InstallError(f"{platform}: the lock has pip packages, which only a {platform} worker can "
                                   f"install (this one is {host})", field="platforms",
                                   hint=f"build {platform} on a {platform} worker, or move the pip packages to conda")
        if job.image and not job.archive:
            self.events.log("  no archive asked for: the image stage installs the environments")
            return
        for platform in self.platforms:
            prefix = self.job_dir / "work" / platform / "env"
            options = _install_options(self.settings, job, PACKED_PREFIX if job.archive else job.env_prefix)
            install_lock(self.lock.platforms[platform], prefix, options, self.reporter)
            self.check_size(platform, prefix)
            if job.archive:
                archive = self.out / f"env-{platform}.tar.zst"
                self.reporter.stage_started(Stage.PACK, f"{platform} -> {archive.name}")
                packed = pack_prefix(prefix, archive, packed_prefix=PACKED_PREFIX, mtime=job.source_date_epoch or 0)
                self.reporter.stage_finished(Stage.PACK, platform, files=packed.files, bytes=archive.stat().st_size)
                self.add("archive", archive.name, archive, "application/zstd", platform)

    def check_size(self, platform: str, prefix: Path) -> None:
        """PolicyViolationError when the installed prefix is larger than the policy's maximum."""
        from envyard.builder.policy import PolicyViolationError, check_installed_size

        if self.job.policy.max_installed_bytes is None:
            return
        size = sum(entry.stat(follow_symlinks=False).st_size for entry in prefix.rglob("*")
                   if not entry.is_dir() or entry.is_symlink())
        if violations := check_installed_size(platform, size, self.job.policy):
            raise PolicyViolationError(violations)

    def image(self, title: str, tag: str) -> str:
        from envyard.builder.image import ImageRequest, build_image
        from envyard.builder.oci.image import ImageOptions
        from envyard.builder.oci.layout import write_layout
        from envyard.builder.oci.model import OCI_PLATFORMS, Descriptor
        from envyard.builder.oci.store import BlobStore

        imaged = tuple(p for p in self.platforms if p in OCI_PLATFORMS)
        if not imaged:
            raise ImageError(f"images can be built for {', '.join(OCI_PLATFORMS)}, not {', '.join(self.platforms)}",
                             field="platforms", hint="add a linux platform, or build without an image")
        if skipped := [p for p in self.platforms if p not in imaged]:
            self.events.log(f"  no image for {', '.join(skipped)} (images are linux only)")
        options = ImageOptions(env_prefix=self.job.env_prefix, source_date_epoch=self.job.source_date_epoch or 0)
        store = BlobStore(self.job_dir / "work" / "oci")
        request = ImageRequest(self.lock, imaged, options, _install_options(self.settings, self.job),
                               sbom=self.job.sbom, name=title)
        image = build_image(request, store, self.reporter).image
        blob_dir = write_layout(image, store, self.out / "oci", tag) / "blobs" / "sha256"
        root = image.root.descriptor
        self.add("oci-index", "image-index.json" if image.root.is_index else "image-manifest.json",
                 blob_dir / root.hex, root.media_type, None if image.root.is_index else imaged[0])
        blobs: dict[str, tuple[Descriptor, set[str]]] = {}
        for manifest, platform in [*zip(image.manifests, imaged, strict=True),
                                   *(zip(image.referrers, imaged, strict=True) if image.referrers else ())]:
            for descriptor in [manifest.descriptor, *manifest.children()]:
                if descriptor.digest != root.digest:
                    blobs.setdefault(descriptor.digest, (descriptor, set()))[1].add(platform)
        for descriptor, owners in blobs.values():  # a blob shared by several platforms belongs to none of them
            self.add("oci-blob", f"blobs/sha256/{descriptor.hex}", blob_dir / descriptor.hex, descriptor.media_type,
                     owners.pop() if len(owners) == 1 else None)
        total = sum(a.size for a in self.artifacts if a.kind.startswith("oci-"))
        self.events.progress("imaging", image.digest, step="layout", state="finished", blobs=len(blobs) + 1,
                             bytes=total)
        return image.digest

    def sboms(self, fmt: Literal["spdx", "cyclonedx"], title: str) -> None:
        """One SBOM per platform: the bytes of the image's SBOM referrer (as :mod:`builder.image` makes them)."""
        from datetime import UTC, datetime

        from envyard.builder.image import platform_lock_digest
        from envyard.builder.oci.sbom import SBOM_FORMATS, cyclonedx_document, spdx_document

        media_type, file_name = SBOM_FORMATS[fmt]
        render = spdx_document if fmt == "spdx" else cyclonedx_document
        created = datetime.fromtimestamp(self.job.source_date_epoch or 0, UTC)
        for platform in self.platforms:
            platform_lock = self.lock.platforms[platform]
            seed = platform_lock_digest(platform_lock)
            path = self.out / file_name.replace("sbom.", f"sbom-{platform}.", 1)
            path.write_bytes(render(platform_lock, name=f"{title}-{platform}", namespace_seed=seed, created=created))
            self.add("sbom", path.name, path, media_type, platform)


def _lock_options(job: JobSpec, settings: Settings) -> Any:
    from envyard.builder.channels import ChannelOptions, S3Options
    from envyard.builder.lock import LockOptions
    from envyard.builder.url_policy import UrlPolicy

    alias = job.policy.channel_alias or job.channel_alias or settings.channel_alias  # a policy's alias is forced
    channels = ChannelOptions(channel_alias=alias, mirrors=settings.mirrors,
                              s3=S3Options(settings.s3_endpoint_url, settings.s3_region, settings.s3_addressing_style))
    return LockOptions(platforms=tuple(job.platforms), channels=channels, pip_index_url=settings.pip_index_url,
                       pip_cache_dir=settings.pip_cache_dir, pip_allow_sdists=job.allow_sdists,
                       url_policy=UrlPolicy.from_settings(settings))


def _install_options(settings: Settings, job: JobSpec, target_prefix: str | None = None) -> Any:
    from envyard.builder.install import InstallOptions

    return InstallOptions(cache_layers=settings.package_cache_layers, pip_cache_dir=settings.pip_cache_dir,
                          target_prefix=target_prefix, replace=True, allow_sdists=job.allow_sdists)


def _image_title(job: JobSpec, lock: EnvironmentLock) -> tuple[str, str]:
    """(title, tag) from ``image_name``: ``ns/env:build-7`` -> ``ns/env``, ``build-7``.

    Only the title goes into the image (label, SBOM names): the same lock rebuilt gives the same digest.
    """
    name = job.image_name.split("@", 1)[0]
    repository, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        repository, tag = name, "latest"
    return repository or lock.name or "environment", tag


def _package_rows(lock: EnvironmentLock) -> list[LockedPackageRow]:
    rows = []
    for platform in lock.platform_names:
        platform_lock = lock.platforms[platform]
        rows += [LockedPackageRow(platform=platform, manager="conda", name=p.name, version=p.version, build=p.build)
                 for p in platform_lock.conda]
        rows += [LockedPackageRow(platform=platform, manager="pypi", name=p.normalized_name, version=p.version)
                 for p in platform_lock.pip]
    return rows


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _run(job_dir: Path, events: JsonLinesEvents) -> int:
    job_dir = job_dir.absolute()
    temporary = job_dir / "tmp"
    try:
        job = JobSpec.model_validate_json((job_dir / "job.json").read_text(encoding="utf-8"))
        temporary.mkdir(parents=True, exist_ok=True)
        tempfile.tempdir = str(temporary)  # this process runs one build: every temporary file stays in JOB_DIR
        run_job(job, job_dir, Settings(), events)
        events.result(MANIFEST_PATH)
        return 0
    except EnvyardError as caught:
        err = DiskFullError.find(caught, job_dir) or caught  # a full disk is no spec or install error
        print(f"error: {err.one_line()}", *err.explanation_lines(), sep="\n", file=sys.stderr, flush=True)
        events.error(err.code, err.message, err.hint, file=err.file, line=err.line, field=err.field)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: cancelled", file=sys.stderr, flush=True)
        events.error("cancelled", "the build was cancelled")
        return EXIT_CANCELLED
    except Exception as exc:
        if (full := DiskFullError.find(exc, job_dir)) is not None:
            print(f"error: {full.one_line()}", file=sys.stderr, flush=True)
            events.error(full.code, full.message, full.hint)
            return EXIT_ERROR
        traceback.print_exc(file=sys.stderr)
        events.error("internal", f"{type(exc).__name__}: {exc}", "this is a bug in envyard's worker; see the log")
        return EXIT_INTERNAL
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _exit_when_stdin_closes() -> None:
    """The worker holds our stdin open; EOF means it is gone (even SIGKILLed), so stop everything we started.

    Nothing comes before the kill: stdout and stderr lead to the dead worker (a write would raise
    BrokenPipeError), and whatever ends the wait (EOF or an error reading) ends in the kill.
    """
    try:
        while os.read(0, 4096):
            pass
    finally:
        try:  # processes that left this process group (uv resolves in its own session): freeze, then kill
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in _descendants():
                    with contextlib.suppress(OSError):
                        os.kill(pid, sig)
        finally:
            os.kill(0, signal.SIGKILL)  # pid 0: this process group (the build and every process it started)


def _descendants() -> list[int]:
    """The pids of every process descended from this one (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", encoding="utf-8", errors="replace") as fh:
                    stat = fh.read()
            except OSError:
                continue
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [os.getpid()]
    while todo:
        for pid in children.get(todo.pop(), ()):
            found.append(pid)
            todo.append(pid)
    return found


def main(argv: list[str] | None = None) -> None:
    """Parse ``JOB_DIR [--events-fd N]``, run the job, and leave with its exit code (no finalization)."""
    parser = argparse.ArgumentParser(prog="python -m envyard.worker.job", description="Run one envyard build.")
    parser.add_argument("job_dir", type=Path, help="directory holding job.json; artifacts go to its out/")
    parser.add_argument("--events-fd", type=int, default=None, help="write JSON-lines events to this descriptor")
    parser.add_argument("--exit-with-stdin", action="store_true",
                        help="end this build (and its process group) when stdin closes: the worker died")
    args = parser.parse_args(argv)
    if args.exit_with_stdin:
        threading.Thread(target=_exit_when_stdin_closes, name="parent-watch", daemon=True).start()
    try:
        events = JsonLinesEvents(args.events_fd)
    except OSError as exc:
        parser.error(f"--events-fd {args.events_fd}: {exc.strerror or exc}")
    signal.signal(signal.SIGTERM, _terminate)
    code = _run(args.job_dir, events)
    with contextlib.suppress(OSError):
        events.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # py-rattler's native threads can abort interpreter finalization (see envyard.cli.main)


if __name__ == "__main__":
    main()
