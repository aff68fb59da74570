"""What the runner accepts from a caller: each check names the parameter it refuses."""

import pytest

from salt_callbacks.model import validation
from salt_callbacks.exceptions import InputError

# -- callback_timeout ----------------------------------------------------------


@pytest.mark.parametrize("value, expected", [(1, 1), (600, 600), ("30", 30), (" 45 ", 45), (120, 120)])
def test_callback_timeout_accepts_whole_seconds_from_1_to_600(value, expected):
    result = validation.callback_timeout(value, default=120)

    assert result == expected
    assert type(result) is int


def test_callback_timeout_none_means_the_default():
    assert validation.callback_timeout(None, default=77) == 77


@pytest.mark.parametrize("value", [0, 601, -5, "abc", "", "-5", "0", True, False, 2.5, [30], {"t": 30}])
def test_callback_timeout_rejects_anything_but_whole_seconds_in_range(value):
    with pytest.raises(InputError) as caught:
        validation.callback_timeout(value, default=120)

    assert caught.value.param == "callback_timeout"
    assert str(caught.value).startswith("callback_timeout: ")
    assert "1 to 600" in str(caught.value)


# -- callback_url --------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/hook",
        "https://example.com",
        "https://user:pw@example.com:8443/a/b?x=1",
        "http://127.0.0.1:8080/",
        "http://[::1]:9000/cb",
    ],
)
def test_callback_url_accepts_absolute_http_and_https_urls_with_a_host(url):
    assert validation.callback_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "/relative/path",
        "example.com/hook",
        "http://",
        "https:///path-only",
        "http://exa mple.com/",
        " http://example.com/",
        "http://example.com/\n",
        "http://example.com/\x01",
        "",
        "   ",
        None,
        42,
        b"http://example.com/",
        "http://example.com:0/",
        "http://example.com:99999/",
        "http://example.com/" + "a" * validation.MAX_URL_LENGTH,
    ],
)
def test_callback_url_rejects_anything_but_an_absolute_http_url_with_a_host(url):
    with pytest.raises(InputError) as caught:
        validation.callback_url(url)

    assert caught.value.param == "callback_url"


# -- function_name -------------------------------------------------------------


@pytest.mark.parametrize("name", ["test.ping", "cmd.run", "state.sls", "_mod._fun2"])
def test_function_name_accepts_module_dot_function(name):
    assert validation.function_name(name) == name


def test_function_name_is_returned_stripped():
    assert validation.function_name("  test.ping\t") == "test.ping"


@pytest.mark.parametrize("name", ["ping", "test.", ".ping", "a.b.c", "test.ping()", "1mod.fun", "", None, 3])
def test_function_name_rejects_anything_but_module_dot_function(name):
    with pytest.raises(InputError) as caught:
        validation.function_name(name)

    assert caught.value.param == "command"


def test_function_name_errors_name_the_parameter_they_were_given():
    with pytest.raises(InputError) as caught:
        validation.function_name("nope", param="fun")

    assert caught.value.param == "fun"


# -- split_raw_command ---------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("cmd.run 'ls -l'", ("cmd.run", ["ls -l"])),
        ("state.sls pending", ("state.sls", ["pending"])),
        ("test.arg a b c=1", ("test.arg", ["a", "b", "c=1"])),
        ("test.ping", ("test.ping", [])),
        ('cmd.run "echo \'hi there\'"', ("cmd.run", ["echo 'hi there'"])),
    ],
)
def test_split_raw_command_splits_like_a_shell(line, expected):
    assert validation.split_raw_command(line) == expected


@pytest.mark.parametrize("line", ["cmd.run 'ls -l", 'cmd.run "unterminated', "", "   ", "''", None, "notafunction x"])
def test_split_raw_command_rejects_unparsable_lines_naming_command(line):
    with pytest.raises(InputError) as caught:
        validation.split_raw_command(line)

    assert caught.value.param == "command"


def test_an_unbalanced_quote_is_reported_with_the_line():
    with pytest.raises(InputError) as caught:
        validation.split_raw_command("cmd.run 'ls -l")

    assert "cannot be parsed" in str(caught.value)
    assert "cmd.run 'ls -l" in str(caught.value)


# -- the other runner arguments ------------------------------------------------


def test_minion_id_refuses_ids_that_would_escape_a_store_bank():
    for bad in ["a/b", "..", ".", "a\\b", "nul\x00", "", None]:
        with pytest.raises(InputError) as caught:
            validation.minion_id(bad)
        assert caught.value.param == "device_id"
    assert validation.minion_id("web-01.example.com") == "web-01.example.com"


def test_device_id_is_stripped_and_must_not_be_empty():
    assert validation.device_id("  web* ") == "web*"
    with pytest.raises(InputError) as caught:
        validation.device_id("  ")
    assert caught.value.param == "device_id"


def test_target_type_must_be_one_localclient_knows():
    assert validation.target_type("compound") == "compound"
    with pytest.raises(InputError) as caught:
        validation.target_type("regex")
    assert caught.value.param == "tgt_type"


def test_positional_args_must_be_a_list_and_a_lone_string_is_not_wrapped():
    assert validation.positional_args(None) == []
    assert validation.positional_args(("a", 1)) == ["a", 1]
    with pytest.raises(InputError) as caught:
        validation.positional_args("a b")
    assert caught.value.param == "arg"


def test_keyword_args_must_be_a_mapping_with_string_keys():
    assert validation.keyword_args(None) == {}
    assert validation.keyword_args({"a": 1}) == {"a": 1}
    with pytest.raises(InputError) as caught:
        validation.keyword_args({1: "a"})
    assert caught.value.param == "kwarg"


def test_returner_name_allows_none_and_module_names_only():
    assert validation.returner_name(None) is None
    assert validation.returner_name("") is None
    assert validation.returner_name("mysql,syslog") == "mysql,syslog"
    with pytest.raises(InputError) as caught:
        validation.returner_name("../evil")
    assert caught.value.param == "returner"


@pytest.mark.parametrize("bad", ["../minion2", "a..b", "..", "dev\n1", "dev\x7f", "x" * 256, "dev\\1", 7])
def test_minion_id_refuses_path_and_control_characters_and_names_device_id(bad):
    with pytest.raises(InputError) as caught:
        validation.minion_id(bad)
    assert caught.value.param == "device_id"
    assert "\n" not in str(caught.value)  # the value is shown escaped


@pytest.mark.parametrize("good", ["20261202143132608945", "20261202143132608945_4242", 20261202143132608945])
def test_jid_accepts_salts_form_with_or_without_unique_jid_suffix(good):
    assert validation.jid(good) == str(good)


@pytest.mark.parametrize("bad", ["../minion2/20261202143132608945", "../../../tokens/" + "a" * 64,
                                 "2026120214313260894", "202612021431326089451", "20261202143132608945_",
                                 "20261202143132608945_x", "20261202143132608945/new", "２０２６１２０２１４３１３２６０８９４５",
                                 "", None, True, 1.5, "req"])
def test_jid_refuses_anything_else_and_names_jid(bad):
    with pytest.raises(InputError) as caught:
        validation.jid(bad)
    assert caught.value.param == "jid"
    assert "Salt job id" in str(caught.value)
