"""Signing and verification: known answers, the Standard Webhooks vector, and every refusal."""

import base64
import hashlib
import hmac

import time

import pytest

from salt_callbacks.webhook import signing
from salt_callbacks.exceptions import SigningError, VerificationError

BODY = b'{"jid":"20240101000000000001","state":"COMMAND_EXECUTED"}'
SECRET = "s3cret"
MSG_ID = "msg_abc"
STAMP = 1700000000

# Computed once with hmac/hashlib and pasted here: a change in the algorithm,
# the key encoding or the signed string shows up as a different literal.
AUTOPI_HEX = "6b2b1625b09725bc7f3400497d4cfb35949aa08ba0c8871e4af86090cf51b114"
STANDARD_V1 = "v1,HaK77V/WTNjEtGlEmzgPl2bkiY8mcMhYVu4JzBNnHPU="
DELIVERY_ID = "msg_24af7e62d1abab93fddbcd96eed403ce"

# The Standard Webhooks specification's published test vector.
SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SW_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SW_TIMESTAMP = 1614265330
SW_BODY = b'{"test": 2432232314}'
SW_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


# -- known answers -------------------------------------------------------------


def test_autopi_signature_is_hex_hmac_sha256_of_the_body_keyed_with_the_secret():
    expected = hmac.new(SECRET.encode("utf-8"), BODY, hashlib.sha256).hexdigest()

    assert signing.seed_signature(BODY, SECRET) == expected
    assert signing.seed_signature(BODY, SECRET) == AUTOPI_HEX


def test_autopi_signature_follows_the_autopi_receiver_example():
    # AutoPi's verifier: hmac.new(secret.encode('utf-8'), json_body, sha256).hexdigest()
    webhook_signature = signing.seed_signature(BODY, "API Token")

    calculated = hmac.new("API Token".encode("utf-8"), BODY, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(calculated, webhook_signature)


def test_standard_signature_is_base64_hmac_of_id_dot_timestamp_dot_body():
    signed = f"{MSG_ID}.{STAMP}.".encode() + BODY
    expected = "v1," + base64.b64encode(hmac.new(SECRET.encode(), signed, hashlib.sha256).digest()).decode()

    assert signing.standard_signature(MSG_ID, STAMP, BODY, SECRET) == expected
    assert signing.standard_signature(MSG_ID, STAMP, BODY, SECRET) == STANDARD_V1


def test_a_float_timestamp_is_signed_as_whole_seconds():
    assert signing.standard_signature(MSG_ID, STAMP + 0.9, BODY, SECRET) == STANDARD_V1


def test_the_standard_webhooks_published_test_vector():
    assert signing.standard_signature(SW_MSG_ID, SW_TIMESTAMP, SW_BODY, SW_SECRET) == SW_SIGNATURE


def test_a_whsec_secret_is_keyed_with_its_decoded_bytes():
    key = base64.b64decode(SW_SECRET[len("whsec_"):])
    signed = f"{SW_MSG_ID}.{SW_TIMESTAMP}.".encode() + SW_BODY
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()

    assert signing.standard_key(SW_SECRET) == key
    assert expected == SW_SIGNATURE


def test_a_whsec_secret_that_is_not_base64_is_a_signing_error():
    with pytest.raises(SigningError):
        signing.standard_key("whsec_not*base64!")


def test_the_autopi_header_uses_the_whole_secret_string_even_for_whsec():
    assert signing.seed_signature(SW_BODY, SW_SECRET) == hmac.new(
        SW_SECRET.encode("utf-8"), SW_BODY, hashlib.sha256
    ).hexdigest()


def test_signed_headers_carry_both_schemes():
    headers = signing.signed_headers(BODY, [SECRET], MSG_ID, STAMP)

    assert headers == {
        "Content-Type": "application/json",
        "X-Request-Signature": AUTOPI_HEX,
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(STAMP),
        "webhook-signature": STANDARD_V1,
    }


def test_signed_headers_with_two_secrets_give_two_signatures_and_the_autopi_header_from_the_first():
    headers = signing.signed_headers(BODY, [SECRET, "old-secret"], MSG_ID, STAMP)

    signatures = headers["webhook-signature"].split(" ")
    assert signatures == [
        signing.standard_signature(MSG_ID, STAMP, BODY, SECRET),
        signing.standard_signature(MSG_ID, STAMP, BODY, "old-secret"),
    ]
    assert all(s.startswith("v1,") for s in signatures)
    assert signatures[0] != signatures[1]
    assert headers["X-Request-Signature"] == AUTOPI_HEX


def test_signed_headers_without_a_secret_refuse_to_sign():
    with pytest.raises(SigningError):
        signing.signed_headers(BODY, [], MSG_ID, STAMP)


def test_fingerprint_is_short_and_does_not_reveal_the_secret():
    print_ = signing.fingerprint(SECRET)

    assert print_ == hashlib.sha256(SECRET.encode()).hexdigest()[:12]
    assert SECRET not in print_


# -- verify --------------------------------------------------------------------


def autopi_headers(body=BODY, secret=SECRET):
    return {"Content-Type": "application/json", "X-Request-Signature": signing.seed_signature(body, secret)}


def test_verify_accepts_the_autopi_header():
    assert signing.verify(BODY, autopi_headers(), SECRET) is True


def test_verify_looks_headers_up_case_insensitively_and_accepts_a_str_body():
    headers = {"x-request-signature": signing.seed_signature(BODY, SECRET)}

    assert signing.verify(BODY.decode(), headers, SECRET) is True


def test_verify_accepts_standard_headers():
    headers = signing.signed_headers(BODY, [SECRET], MSG_ID, STAMP)

    assert signing.verify(BODY, headers, SECRET, now=STAMP) is True


def test_verify_accepts_the_published_standard_webhooks_vector():
    headers = {"webhook-id": SW_MSG_ID, "webhook-timestamp": str(SW_TIMESTAMP), "webhook-signature": SW_SIGNATURE}

    assert signing.verify(SW_BODY, headers, SW_SECRET, now=SW_TIMESTAMP) is True


@pytest.mark.parametrize("skew", [-300, -299, 0, 299, 300])
def test_verify_accepts_standard_headers_within_the_tolerance(skew):
    headers = signing.signed_headers(BODY, [SECRET], MSG_ID, STAMP)

    assert signing.verify(BODY, headers, SECRET, tolerance=300, now=STAMP + skew) is True


@pytest.mark.parametrize("skew", [-301, 301, -86400, 86400])
def test_verify_rejects_stale_and_future_timestamps_beyond_the_tolerance(skew):
    headers = signing.signed_headers(BODY, [SECRET], MSG_ID, STAMP)

    with pytest.raises(VerificationError, match="beyond 300 s"):
        signing.verify(BODY, headers, SECRET, tolerance=300, now=STAMP + skew)


def test_verify_accepts_a_rotated_secret_in_either_position():
    headers = signing.signed_headers(BODY, ["new-secret", "old-secret"], MSG_ID, STAMP)

    assert signing.verify(BODY, headers, "new-secret", now=STAMP) is True
    assert signing.verify(BODY, headers, "old-secret", now=STAMP) is True
    with pytest.raises(VerificationError):
        signing.verify(BODY, headers, "third-secret", now=STAMP)


def test_verify_rejects_a_tampered_body_with_either_scheme():
    tampered = BODY.replace(b"COMMAND_EXECUTED", b"TIMEOUT")

    with pytest.raises(VerificationError):
        signing.verify(tampered, autopi_headers(), SECRET)
    with pytest.raises(VerificationError):
        signing.verify(tampered, signing.signed_headers(BODY, [SECRET], MSG_ID, STAMP), SECRET, now=STAMP)


def test_verify_rejects_the_wrong_secret_with_either_scheme():
    with pytest.raises(VerificationError):
        signing.verify(BODY, autopi_headers(), "wrong")
    with pytest.raises(VerificationError):
        signing.verify(BODY, signing.signed_headers(BODY, [SECRET], MSG_ID, STAMP), "wrong", now=STAMP)


def test_verify_rejects_a_changed_message_id_or_timestamp():
    headers = signing.signed_headers(BODY, [SECRET], MSG_ID, STAMP)

    with pytest.raises(VerificationError):
        signing.verify(BODY, dict(headers, **{"webhook-id": "msg_other"}), SECRET, now=STAMP)
    with pytest.raises(VerificationError):
        signing.verify(BODY, dict(headers, **{"webhook-timestamp": str(STAMP + 1)}), SECRET, now=STAMP)


@pytest.mark.parametrize(
    "drop",
    [
        ["webhook-id"],
        ["webhook-timestamp"],
        ["webhook-id", "webhook-timestamp"],
    ],
)
def test_verify_rejects_standard_signatures_missing_their_id_or_timestamp(drop):
    headers = signing.signed_headers(BODY, [SECRET], MSG_ID, STAMP)
    for name in drop:
        del headers[name]

    with pytest.raises(VerificationError, match="required"):
        signing.verify(BODY, headers, SECRET, now=STAMP)


def test_verify_rejects_a_request_with_no_signature_header():
    with pytest.raises(VerificationError, match="no signature header"):
        signing.verify(BODY, {"Content-Type": "application/json"}, SECRET)


def test_verify_rejects_an_empty_autopi_header():
    with pytest.raises(VerificationError):
        signing.verify(BODY, {"X-Request-Signature": ""}, SECRET)


def test_verify_rejects_a_non_integer_timestamp():
    headers = signing.signed_headers(BODY, [SECRET], MSG_ID, STAMP)
    headers["webhook-timestamp"] = "yesterday"

    with pytest.raises(VerificationError, match="not an integer"):
        signing.verify(BODY, headers, SECRET, now=STAMP)


def test_verify_without_now_checks_the_timestamp_against_the_receivers_clock():
    fresh = signing.signed_headers(BODY, [SECRET], MSG_ID, time.time())
    stale = signing.signed_headers(BODY, [SECRET], MSG_ID, time.time() - 301)

    assert signing.verify(BODY, fresh, SECRET) is True
    with pytest.raises(VerificationError, match="beyond 300 s"):
        signing.verify(BODY, stale, SECRET)


def test_verify_accepts_any_of_a_receivers_rotating_secrets():
    headers = signing.signed_headers(BODY, ["new-key"], MSG_ID, STAMP)

    assert signing.verify(BODY, headers, ["old-key", "new-key"], now=STAMP) is True
    autopi_only = {"X-Request-Signature": headers["X-Request-Signature"]}
    assert signing.verify(BODY, autopi_only, ["old-key", "new-key"]) is True
    with pytest.raises(VerificationError):
        signing.verify(BODY, headers, ["old-key"], now=STAMP)


def test_verify_does_not_fall_back_to_the_autopi_header_when_a_standard_signature_is_bad():
    headers = signing.signed_headers(BODY, [SECRET], MSG_ID, STAMP)
    headers["webhook-signature"] = "v1,AAAA"

    with pytest.raises(VerificationError, match="no webhook-signature matched"):
        signing.verify(BODY, headers, SECRET, now=STAMP)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Request-Signature": "\u00e9" * 64},
        {"webhook-id": MSG_ID, "webhook-timestamp": str(STAMP), "webhook-signature": "v1,\u00e9"},
    ],
    ids=["autopi", "standard"],
)
def test_verify_rejects_a_non_ascii_signature_with_verification_error(headers):
    # A receiver decodes header bytes as latin-1, so anyone can send these.
    with pytest.raises(VerificationError):
        signing.verify(BODY, headers, SECRET, now=STAMP)


# -- delivery ids and signers --------------------------------------------------


def test_delivery_id_is_a_known_answer():
    expected = "msg_" + hashlib.sha256(b"20240101000000000001\x00dev1\x00COMMAND_EXECUTED").hexdigest()[:32]

    assert signing.delivery_id("20240101000000000001", "dev1", "COMMAND_EXECUTED") == expected
    assert expected == DELIVERY_ID


def test_delivery_id_is_stable_for_the_same_job_device_and_state():
    first = signing.delivery_id("20240101000000000001", "dev1", "TIMEOUT")

    assert signing.delivery_id("20240101000000000001", "dev1", "TIMEOUT") == first


def test_delivery_id_differs_across_states_devices_and_jobs():
    ids = {
        signing.delivery_id("20240101000000000001", "dev1", "COMMAND_EXECUTED"),
        signing.delivery_id("20240101000000000001", "dev1", "TIMEOUT"),
        signing.delivery_id("20240101000000000001", "dev2", "TIMEOUT"),
        signing.delivery_id("20240101000000000002", "dev1", "TIMEOUT"),
        # The separator keeps ("a", "bc") and ("ab", "c") apart.
        signing.delivery_id("a", "bc", "TIMEOUT"),
        signing.delivery_id("ab", "c", "TIMEOUT"),
    }

    assert len(ids) == 6


def test_delivery_id_contains_no_dot():
    for state in ("COMMAND_EXECUTED", "TIMEOUT"):
        value = signing.delivery_id("2024.01", "web.example.com", state)
        assert "." not in value
        assert value.startswith("msg_")


def test_signer_for_is_the_users_own_secret_when_there_is_one():
    assert signing.signer_for("alice", {"alice": "a", "default": "d"}) == "alice"


def test_signer_for_falls_back_to_default():
    assert signing.signer_for("bob", {"alice": "a", "default": "d"}) == "default"


def test_signer_for_refuses_when_neither_the_user_nor_default_has_a_secret():
    with pytest.raises(SigningError) as caught:
        signing.signer_for("bob", {"alice": "a"})

    assert caught.value.signer == "bob"
    assert "unsigned" in str(caught.value)
