"""The spec parser stays linear and bounded: huge mappings, deep nesting, long lists and big documents are
refused by a typed limit error naming the line, never a RecursionError or minutes of CPU."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envyard.builder.errors import SpecError, SpecLimitError
from envyard.builder.spec import detect_input_kind, parse_environment_yaml, parse_requirements_txt
from envyard.builder.spec_yaml import SpecLimits, check_yaml_limits

HEAD = "name: big\nchannels: [conda-forge]\ndependencies: [python]\nvariables:\n"


def test_forty_thousand_variables_are_refused_in_milliseconds() -> None:
    """The attack of issue 11: a 0.43 MB spec with 40k ``variables`` keys took 130-149 s to parse."""
    text = HEAD + "".join(f"  V{i:05d}: '{i}'\n" for i in range(40_000))
    assert len(text) > 430_000
    started = time.perf_counter()
    with pytest.raises(SpecLimitError) as info:
        parse_environment_yaml(text, source="big.yml")
    assert time.perf_counter() - started < 1.0
    err = info.value
    assert (err.code, err.status, err.file, err.line) == ("spec-limit-exceeded", 422, "big.yml", 4 + 10_001)
    assert "more than 10,000 keys" in err.message and err.details["limit"] == "max_mapping_keys"


def _parse_seconds(keys: int) -> float:
    text = HEAD + "".join(f"  VARIABLE_{i:05d}: '{i}'\n" for i in range(keys))
    best = float("inf")
    for _ in range(5):  # the best of five: another process on the machine slows some runs, never speeds one
        started = time.perf_counter()
        spec = parse_environment_yaml(text, source="big.yml")
        best = min(best, time.perf_counter() - started)
    assert len(spec.variables) == keys and spec.variables[f"VARIABLE_{keys - 1:05d}"] == str(keys - 1)
    return best


def test_parsing_is_linear_in_the_number_of_keys() -> None:
    """10x the keys cost about 10x the time (the quadratic check cost 100x); 10k keys parse in ~0.2 s. The wide
    margin between the two keeps the test steady on a busy machine."""
    small, large = _parse_seconds(1_000), _parse_seconds(10_000)
    assert large / small < 30, (small, large)


@pytest.mark.parametrize(
    "text",
    [
        "name: deep\nvariables: " + "[" * 10_000 + "]" * 10_000 + "\n",
        "name: deep\nvariables: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n",
        # block styles indent each level: 200 levels are already 40 kB
        "name: deep\nvariables:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200)),
        "name: deep\ndependencies:\n" + "".join("  " * (i + 1) + "-\n" for i in range(200)),
    ],
    ids=["flow-lists", "flow-maps", "block-maps", "block-lists"],
)
def test_deep_nesting_is_a_limit_error_not_a_recursion_error(text: str) -> None:
    started = time.perf_counter()
    with pytest.raises(SpecLimitError) as info:
        parse_environment_yaml(text, source="deep.yml")
    assert time.perf_counter() - started < 0.5
    err = info.value
    assert err.details == {"limit": "max_depth", "maximum": 64} and "nests deeper than 64 levels" in err.message
    assert err.line is not None and err.line >= 2 and err.one_line().startswith(f"deep.yml:{err.line}: ")


def test_flow_style_detection_is_bounded_too() -> None:
    """``detect_input_kind`` loads flow-style documents: the same limits apply before it does."""
    with pytest.raises(SpecLimitError):
        detect_input_kind("x.yml", "{" + "a: {" * 5_000 + "}" * 5_001)


def test_list_length_nodes_and_size_limits_name_the_limit() -> None:
    limits = SpecLimits(max_chars=10_000, max_nodes=500, max_sequence_items=100, max_mapping_keys=50)
    long_list = "dependencies:\n" + "".join(f"  - p{i}\n" for i in range(101))
    with pytest.raises(SpecLimitError) as info:
        check_yaml_limits(long_list, "l.yml", limits)
    assert (info.value.details["limit"], info.value.line) == ("max_sequence_items", 102)
    many = "a:\n" + "".join(f"  - [{i}, {i}]\n" for i in range(90)) + "b:\n" + "".join(
        f"  - [{i}, {i}]\n" for i in range(90))
    with pytest.raises(SpecLimitError) as info:
        check_yaml_limits(many, "n.yml", limits)
    assert info.value.details == {"limit": "max_nodes", "maximum": 500}
    with pytest.raises(SpecLimitError) as info:
        check_yaml_limits("a: " + "x" * 10_001, "s.yml", limits)
    assert info.value.details["limit"] == "max_chars" and "10,004 characters" in info.value.message
    with pytest.raises(SpecLimitError) as info:
        parse_requirements_txt("requests\n" * 200_000, source="requirements.txt")
    assert info.value.details["limit"] == "max_chars"


def test_aliases_count_as_nodes() -> None:
    """An alias is one node (the composer shares the anchored node); a flood of them still hits the node limit."""
    text = "base: &b [1, 2]\nmany: [" + ", ".join(["*b"] * 300) + "]\n"
    with pytest.raises(SpecLimitError) as info:
        check_yaml_limits(text, "a.yml", SpecLimits(max_nodes=200))
    assert info.value.details["limit"] == "max_nodes"
    check_yaml_limits(text, "a.yml")


def test_syntax_errors_keep_their_message_and_line() -> None:
    with pytest.raises(SpecError) as info:
        parse_environment_yaml("dependencies: [a, b\n", source="e.yml")
    assert (info.value.line, info.value.code) == (2, "invalid-spec")
    assert "expected ',' or ']'" in info.value.message


_KEY = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,11}", fullmatch=True).filter(
    lambda k: k.lower() not in {"null", "true", "false", "yes", "no", "on", "off", "y", "n"}
)


@settings(max_examples=60, deadline=None)
@given(keys=st.lists(_KEY, min_size=1, max_size=40, unique=True), data=st.data())
def test_duplicate_key_is_reported_on_the_line_of_its_second_occurrence(keys: list[str], data: st.DataObject) -> None:
    """Random ``variables`` mappings with one key repeated: the error names that key and the repeat's line."""
    duplicate = data.draw(st.sampled_from(keys))
    position = data.draw(st.integers(min_value=keys.index(duplicate) + 1, max_value=len(keys)))
    ordered = [*keys[:position], duplicate, *keys[position:]]
    values = data.draw(st.lists(st.integers(0, 10**6), min_size=len(ordered), max_size=len(ordered)))
    text = HEAD + "".join(f"  {k}: '{v}'\n" for k, v in zip(ordered, values, strict=True))
    with pytest.raises(SpecError) as info:
        parse_environment_yaml(text, source="dup.yml")
    assert info.value.line == 4 + position + 1
    assert info.value.message == f"duplicate or empty key {duplicate!r}" and info.value.field == duplicate


@settings(max_examples=30, deadline=None)
@given(keys=st.lists(_KEY, min_size=0, max_size=60, unique=True))
def test_mappings_without_duplicates_parse_in_order(keys: list[str]) -> None:
    text = HEAD + "".join(f"  {k}: '{i}'\n" for i, k in enumerate(keys))
    spec = parse_environment_yaml(text, source="ok.yml")
    assert list(spec.variables) == keys
