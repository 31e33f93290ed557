"""Specs from others (the service's submissions, its workers) never read files: pip ``-r`` is refused by the
parser unless the caller allows it (the local CLI on the user's own files), errors never echo a file's
content, and the CLI inlines ``-r`` files from the user's disk before it submits."""

from __future__ import annotations

from pathlib import Path

import pytest

from envyard.builder.errors import SpecError, SpecIncludeError
from envyard.builder.lock import LockOptions
from envyard.builder.pipeline import lock_to_directory, read_input
from envyard.builder.spec import EnvironmentSpec, parse_environment_yaml, parse_requirements_txt, read_spec
from envyard.builder.spec_inline import inline_includes

SECRET = "envyard-secret-0123456789abcdef"


@pytest.fixture
def secret_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding what the server keeps in its data dir (``secret-key``)."""
    (tmp_path / "secret-key").write_text(SECRET + "\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def env_yaml(*pip: str) -> str:
    return "channels: [conda-forge]\ndependencies:\n  - python\n  - pip:\n" + "".join(f"    - {p}\n" for p in pip)


@pytest.mark.parametrize("target", ["secret-key", "./secret-key", "/etc/passwd", "/proc/self/environ",
                                    "../../../../etc/passwd"])
@pytest.mark.parametrize("spelling", ["-r {}", "--requirement {}", "--requirement={}", "-r{}"])
def test_submitted_spec_include_is_refused_without_reading(secret_dir: Path, target: str, spelling: str) -> None:
    """The attack of issue 11: ``-r secret-key`` came back as the 422's "invalid pip requirement" line."""
    line = spelling.format(target)
    with pytest.raises(SpecIncludeError) as info:
        parse_environment_yaml(env_yaml("requests", f"'{line}'"), source="environment.yml")
    err = info.value
    assert (err.code, err.status, err.file, err.line, err.field) == (
        "spec-include-refused", 422, "environment.yml", 6, "pip")
    assert "cannot include files" in err.message and "inline the requirements" in (err.hint or "")
    shown = err.one_line() + str(err.to_problem())
    assert SECRET not in shown and "root:" not in shown and "PATH=" not in shown
    with pytest.raises(SpecIncludeError) as info:
        parse_requirements_txt(f"requests\n{line}\n", source="requirements.txt")
    assert (info.value.file, info.value.line) == ("requirements.txt", 2)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-c secret-key", "pip option -c is not supported"),
        ("--constraint=secret-key", "pip option --constraint is not supported"),
        ("-e ./secret-key", "editable/local pip requirements"),
        ("./secret-key", "editable/local pip requirements"),
        ("/etc/passwd", "editable/local pip requirements"),
        ("pkg @ file:///etc/passwd", "editable/local pip requirements"),
        ("file:///etc/passwd", "editable/local pip requirements"),
        ("--find-links /etc", "editable/local pip requirements"),
        ("-f file:///etc", "editable/local pip requirements"),
        ("--index-url file:///etc", "--index-url must be an http(s) URL"),
    ],
)
def test_other_file_references_are_refused_naming_the_line(secret_dir: Path, line: str, message: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_environment_yaml(env_yaml(f"'{line}'"), source="environment.yml")
    assert (info.value.line, info.value.field) == (5, "pip") and message in info.value.message
    assert SECRET not in info.value.one_line()


def test_local_cli_still_reads_includes_next_to_the_spec(tmp_path: Path) -> None:
    (tmp_path / "reqs.txt").write_text("rich>=13\n")
    (tmp_path / "env.yml").write_text(env_yaml("-r reqs.txt"))
    assert [r.text for r in read_spec(tmp_path / "env.yml").pip.requirements] == ["rich>=13"]  # type: ignore[union-attr]
    loaded = read_input(tmp_path / "env.yml")
    assert [r.text for r in loaded.pip.requirements] == ["rich>=13"]  # type: ignore[union-attr]
    with pytest.raises(SpecIncludeError):
        read_input(tmp_path / "env.yml", allow_includes=False)
    with pytest.raises(SpecIncludeError):
        read_spec(tmp_path / "env.yml", allow_includes=False)


def test_worker_pipeline_refuses_includes_before_any_solve(tmp_path: Path) -> None:
    """Defence in depth: the worker's lock_to_directory(allow_includes=False) refuses what the API would."""
    spec = tmp_path / "input" / "environment.yml"
    spec.parent.mkdir()
    (spec.parent / "secret-key").write_text(SECRET)
    spec.write_text(env_yaml("-r secret-key"))
    with pytest.raises(SpecIncludeError) as info:
        lock_to_directory(spec, tmp_path / "out", LockOptions(), cache_dir=tmp_path / "cache", environ={},
                          allow_includes=False)
    assert SECRET not in info.value.one_line() and not (tmp_path / "out").exists()


# --- client-side inlining ----------------------------------------------------------------------------------------


def test_inline_replaces_includes_with_their_lines_keeping_selectors(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("# base\nrequests>=2.31  # http\n\nrich \\\n  >=13\n-r more/extra.txt\n")
    (tmp_path / "more").mkdir()
    (tmp_path / "more" / "extra.txt").write_text("--extra-index-url https://pypi.example.org/simple\nattrs\n")
    (tmp_path / "linux.txt").write_text("uvloop\n")
    text = ("name: demo  # comment kept\nchannels: [conda-forge]\ndependencies:\n  - python\n  - pip:\n"
            "    - flask\n    - -r base.txt\n    - --requirement linux.txt  # [linux]\n"
            "    - sel(osx): -r linux.txt\n")
    inlined = inline_includes(text, tmp_path / "env.yml")
    assert "-r" not in inlined and "--requirement" not in inlined and "name: demo  # comment kept" in inlined
    spec = parse_environment_yaml(inlined, source="env.yml")
    assert spec.pip is not None
    assert [(r.text, r.selector) for r in spec.pip.requirements] == [
        ("flask", None), ("requests>=2.31", None), ("rich >=13", None), ("attrs", None), ("uvloop", "linux"),
        ("uvloop", "osx"),
    ]
    assert spec.pip.extra_index_urls == ("https://pypi.example.org/simple",)
    local = read_spec_text(tmp_path, text)
    assert local.pip is not None and [r.text for r in local.pip.requirements] == [
        r.text for r in spec.pip.requirements]


def read_spec_text(directory: Path, text: str) -> EnvironmentSpec:
    (directory / "env.yml").write_text(text)
    return read_spec(directory / "env.yml")


def test_inline_requirements_file_and_unchanged_specs(tmp_path: Path) -> None:
    (tmp_path / "common.txt").write_text("numpy\n")
    assert inline_includes("-r common.txt\nscipy\n", tmp_path / "requirements.txt") == "numpy\nscipy\n"
    plain = "channels: [conda-forge]\ndependencies:\n  - python\n  - pip:\n    - requests\n"
    assert inline_includes(plain, tmp_path / "env.yml") is plain


@pytest.mark.parametrize(
    ("files", "text", "message"),
    [
        ({}, env_yaml("-r missing.txt"), "file not found"),
        ({"loop.txt": "-r loop.txt\n"}, env_yaml("-r loop.txt"), "more than 5 deep"),
        ({}, env_yaml("-r ../outside.txt"), "outside the spec's directory"),
        ({"r.txt": "x\n"}, "dependencies:\n  - pip: [-r r.txt]\n", "cannot inline '-r r.txt' written in this form"),
    ],
)
def test_inline_errors_name_the_spec_line(tmp_path: Path, files: dict[str, str], text: str, message: str) -> None:
    (tmp_path / "outside.txt").write_text(SECRET)
    project = tmp_path / "project"
    project.mkdir()
    for name, content in files.items():
        (project / name).write_text(content)
    with pytest.raises(SpecError) as info:
        inline_includes(text, project / "env.yml")
    assert message in info.value.message and SECRET not in info.value.one_line()
    assert info.value.line is not None


def test_submitted_inlined_spec_equals_the_local_parse(tmp_path: Path) -> None:
    """What the CLI submits parses (without includes) to what ``envyard lock`` reads locally."""
    (tmp_path / "reqs.txt").write_text("requests==2.32.3 --hash=sha256:" + "a" * 64 + "\n")
    text = env_yaml("-r reqs.txt")
    local = read_spec_text(tmp_path, text)
    submitted = parse_environment_yaml(inline_includes(text, tmp_path / "env.yml"), source="env.yml")
    assert local.canonical() == submitted.canonical()
