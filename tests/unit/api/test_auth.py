"""The HTTP API's authentication: header forms, the token's form, the token store's answer."""

import pytest

from salt_callbacks.api import auth as apiauth
from salt_callbacks.api.auth import Authenticator, token_from_header, token_pattern
from salt_callbacks.exceptions import AuthenticationError

from tests.support.fakes import FakeClock

TOKEN = "0123456789abcdef" * 4
SHA256 = token_pattern("sha256")


@pytest.mark.parametrize("header", [f"APIToken {TOKEN}", f"Bearer {TOKEN}", f"apitoken {TOKEN}", f"BEARER {TOKEN}"])
def test_both_autopi_header_forms_carry_the_token(header):
    assert token_from_header(header, SHA256) == TOKEN


@pytest.mark.parametrize("header, detail", [
    (None, apiauth.NOT_PROVIDED),
    ("", apiauth.NOT_PROVIDED),
    (f"Token {TOKEN}", apiauth.BAD_HEADER),
    ("Bearer", apiauth.BAD_HEADER),
    (f"Bearer  {TOKEN}", apiauth.BAD_HEADER),
    (f"Bearer {TOKEN} extra", apiauth.BAD_HEADER),
    (TOKEN, apiauth.BAD_HEADER),
    ("Bearer ../x", apiauth.BAD_FORM),
    ("Bearer ../callbacks/records/dev1/20240101000000000001", apiauth.BAD_FORM),
    (f"Bearer {TOKEN.upper()}", apiauth.BAD_FORM),
    (f"Bearer {TOKEN[:-1]}", apiauth.BAD_FORM),
    (f"Bearer {TOKEN}0", apiauth.BAD_FORM),
    (f"Bearer {TOKEN[:-1]}/", apiauth.BAD_FORM),
])
def test_anything_but_one_well_formed_token_is_refused_with_a_clear_detail(header, detail):
    with pytest.raises(AuthenticationError) as caught:
        token_from_header(header, SHA256)
    assert caught.value.detail == detail


@pytest.mark.parametrize("hash_type, length", [("sha256", 64), ("md5", 32), ("sha512", 128), ("sha1", 40)])
def test_the_token_form_follows_the_masters_hash_type(hash_type, length):
    pattern = token_pattern(hash_type)
    assert pattern.fullmatch("a" * length)
    assert not pattern.fullmatch("a" * (length - 1)) and not pattern.fullmatch("a" * (length + 1))


class Store:
    def __init__(self, tokens):
        self.tokens = tokens
        self.asked = []

    def lookup(self, token):
        self.asked.append(token)
        return self.tokens.get(token)


def authenticator(tokens, clock=None):
    store = Store(tokens)
    return Authenticator(store.lookup, {"auto", "pam"}, SHA256, clock=clock or FakeClock()), store


def test_a_valid_token_gives_its_user():
    clock = FakeClock()
    auth, _ = authenticator({TOKEN: {"name": "alice", "eauth": "auto", "expire": clock.now + 60, "token": TOKEN}}, clock)
    identity = auth.authenticate(f"Bearer {TOKEN}")
    assert (identity.user, identity.eauth, identity.token) == ("alice", "auto", TOKEN)
    assert TOKEN not in repr(identity)


def test_a_malformed_token_never_reaches_the_token_store():
    auth, store = authenticator({})
    with pytest.raises(AuthenticationError):
        auth.authenticate("APIToken ../../etc/passwd")
    assert store.asked == []


@pytest.mark.parametrize("data, detail", [
    (None, apiauth.INVALID),
    ({}, apiauth.INVALID),
    ({"name": "alice", "eauth": "ldap", "expire": 2e9}, apiauth.INVALID),  # backend no longer enabled
    ({"eauth": "auto", "expire": 2e9}, apiauth.INVALID),
    ({"name": "alice", "eauth": "auto"}, apiauth.EXPIRED),
    ({"name": "alice", "eauth": "auto", "expire": 1_700_000_000.0 - 1}, apiauth.EXPIRED),
    ({"name": "alice", "eauth": "auto", "expire": 1_700_000_000.0}, apiauth.EXPIRED),
])
def test_unknown_expired_or_foreign_tokens_are_refused_without_echoing_the_token(data, detail):
    auth, _ = authenticator({TOKEN: data} if data is not None else {})
    with pytest.raises(AuthenticationError) as caught:
        auth.authenticate(f"Bearer {TOKEN}")
    assert caught.value.detail == detail
    assert TOKEN not in str(caught.value)
