"""The raw command line typed by Salt's own CLI typing, with the YAML guard in
front (issue 14.4): the guard changes nothing Salt would type, and stops the
alias bomb before Salt's loader sees it."""

import shlex

import salt.utils.args
import yaml
from hypothesis import given, settings, strategies as st

import pytest

from salt_callbacks.adapters.cli import parse_cli_args
from salt_callbacks.exceptions import InputError
from salt_callbacks.service import ExecuteRequest
from tests.support.attacks import BOMB
from tests.unit.model.test_raw_value import one_line, trees


@pytest.mark.parametrize("line", [f"test.arg '{BOMB}'", f"test.arg 'k={BOMB}'", f"test.arg ok \"{BOMB}\" n=1"])
def test_the_alias_bomb_as_an_argument_or_a_keyword_value_is_refused_naming_command(line):
    with pytest.raises(InputError) as caught:
        ExecuteRequest.from_command_line(line, parse_cli_args, device_id="m1")
    assert caught.value.param == "command"


@settings(max_examples=100, deadline=None)
@given(st.lists(trees, max_size=3), st.dictionaries(st.sampled_from(["a", "b", "name"]), trees, max_size=2))
def test_values_without_anchors_are_typed_exactly_as_salt_types_them(args, kwargs):
    tokens = [one_line(a) for a in args] + [f"{k}={one_line(v)}" for k, v in kwargs.items()]
    expected = salt.utils.args.parse_input(list(tokens), condition=False)
    assert parse_cli_args(list(tokens)) == (list(expected[0]), dict(expected[1]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=16),
                max_size=4))
def test_any_line_is_typed_as_salt_types_it_or_refused_naming_command(tokens):
    try:
        request = ExecuteRequest.from_command_line(shlex.join(["test.arg", *tokens]), parse_cli_args, device_id="m1")
    except InputError as exc:
        assert exc.param == "command"
        return
    expected = salt.utils.args.parse_input(list(tokens), condition=False)
    assert (request.arg, request.kwarg) == (list(expected[0]), dict(expected[1]))
    yaml.safe_dump([request.arg, request.kwarg])  # nothing that cannot be stored


def test_the_bomb_written_without_spaces_is_no_yaml_and_stays_a_string():
    # libyaml refuses an anchor followed by '[': Salt then keeps the text as it is.
    arg, kwarg = parse_cli_args(["k=" + BOMB.replace(" ", "")])
    assert kwarg == {"k": BOMB.replace(" ", "")}
