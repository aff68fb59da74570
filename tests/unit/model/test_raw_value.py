"""Raw command values (issue 14.4): YAML anchors and aliases never reach Salt's
loader, nor nesting past a bound; everything else is left to Salt's typing.
Property-based: the guard refuses every shared structure, whatever its shape,
and nothing else of what a one-line YAML dump can say."""

import yaml
from hypothesis import given, settings, strategies as st

import pytest

from salt_callbacks.exceptions import InputError
from salt_callbacks.model import validation
from tests.support.attacks import BOMB


scalars = st.one_of(st.integers(), st.booleans(), st.none(), st.floats(allow_nan=False, allow_infinity=False),
                    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8))
trees = st.recursive(scalars, lambda children: st.one_of(
    st.lists(children, max_size=4), st.dictionaries(st.text("abcxyz", min_size=1, max_size=3), children, max_size=3)),
    max_leaves=20)


def one_line(tree):
    return yaml.safe_dump(tree, default_flow_style=True, width=10**9).strip().removesuffix("...").strip()


def refused(text):
    with pytest.raises(InputError) as caught:
        validation.raw_value(text)
    assert caught.value.param == "command"
    return str(caught.value)


def test_the_414_byte_alias_bomb_is_refused_before_anything_is_built():
    line = f"test.arg '{BOMB}'"
    assert len(BOMB) < 414
    assert "anchors and aliases" in refused(BOMB)
    assert validation.split_raw_command(line) == ("test.arg", [BOMB])


@pytest.mark.parametrize("text", ["&a x", "[*a]", "{k: &v 1, j: *v}", "- &a [1]\n", "[&a [x], *a, *a]"])
def test_any_anchor_or_alias_is_refused(text):
    if "\n" in text:
        assert validation.raw_value(text) == text  # Salt leaves a multi-line value untyped
    else:
        refused(text)


@pytest.mark.parametrize("text", ["a*b", "x&y", "'*a'", '"&a"', "*", "&", "3 * 4", "ls -l", "k:v", "-1", "[1, '*a']"])
def test_stars_and_ampersands_that_are_not_yaml_anchors_pass(text):
    assert validation.raw_value(text) == text


def test_nesting_past_the_bound_is_refused_and_up_to_it_passes():
    depth = validation.MAX_YAML_DEPTH
    assert validation.raw_value("[" * depth + "]" * depth)
    assert "levels deep" in refused("[" * (depth + 1) + "]" * (depth + 1))


def test_an_overlong_line_is_refused_naming_command():
    with pytest.raises(InputError) as caught:
        validation.split_raw_command("test.arg " + "x" * validation.MAX_RAW_COMMAND)
    assert caught.value.param == "command"


@settings(max_examples=100, deadline=None)
@given(trees, st.data())
def test_a_value_that_shares_any_part_of_itself_is_refused(tree, data):
    # yaml.dump writes an anchor and an alias for a node it meets twice.
    shared = data.draw(st.one_of(st.lists(scalars, max_size=3), st.dictionaries(st.just("k"), scalars, max_size=2)))
    text = one_line([tree, shared, [shared]])
    assert "&" in text and "*" in text
    refused(text)


@settings(max_examples=100, deadline=None)
@given(trees)
def test_a_value_without_shared_parts_passes_unchanged(tree):
    text = one_line(tree)
    assert validation.raw_value(text) == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_passed_unchanged_or_refused_naming_command(text):
    try:
        assert validation.raw_value(text) == text
    except InputError as exc:
        assert exc.param == "command"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=12), max_size=5))
def test_a_shell_quoted_line_splits_back_into_its_tokens(tokens):
    import shlex

    line = shlex.join(["test.arg", *tokens])
    assert validation.split_raw_command(line) == ("test.arg", tokens)
