"""Bearer tokens and stream tickets."""

from __future__ import annotations

import logging
import time

import jwt
import pytest

from mediajobs.errors import AuthError
from mediajobs.service.auth import Authenticator, Principal, RedactTickets, redact_query

SECRET = "unit-secret-" + "k" * 40


def code_of(call) -> str:
    with pytest.raises(AuthError) as caught:
        call()
    return caught.value.code


def test_a_valid_bearer_token_names_the_user_roles_and_expiry():
    auth = Authenticator(SECRET)
    token = auth.issue_token("alice", roles=["admin"], ttl=60)
    principal = auth.bearer(f"Bearer {token}")
    assert principal.user_id == "alice"
    assert principal.is_admin
    assert principal.expires_at is not None and 50 < principal.expires_at - time.time() <= 60


def test_bad_bearer_tokens_are_refused_with_a_code():
    auth = Authenticator(SECRET)
    assert code_of(lambda: auth.bearer(None)) == "missing_credentials"
    assert code_of(lambda: auth.bearer("Basic abc")) == "invalid_token"
    other = Authenticator("another-secret-" + "z" * 40).issue_token("alice")
    assert code_of(lambda: auth.bearer(f"Bearer {other}")) == "invalid_token"
    expired = jwt.encode({"sub": "a", "exp": int(time.time()) - 5}, SECRET, algorithm="HS256")
    assert code_of(lambda: auth.bearer(f"Bearer {expired}")) == "token_expired"
    no_exp = jwt.encode({"sub": "a"}, SECRET, algorithm="HS256")
    assert code_of(lambda: auth.bearer(f"Bearer {no_exp}")) == "invalid_token"
    none_alg = jwt.encode({"sub": "a", "exp": int(time.time()) + 60}, None, algorithm="none")
    assert code_of(lambda: auth.bearer(f"Bearer {none_alg}")) == "invalid_token"


def test_issuer_and_audience_are_checked_when_configured():
    strict = Authenticator(SECRET, issuer="https://id.example", audience="mediajobs")
    assert strict.bearer(f"Bearer {strict.issue_token('alice')}").user_id == "alice"
    loose = Authenticator(SECRET).issue_token("alice")
    assert code_of(lambda: strict.bearer(f"Bearer {loose}")) == "invalid_token"


def test_a_ticket_opens_streams_only_and_never_outlives_its_token():
    auth = Authenticator(SECRET, ticket_ttl=600)
    principal = Principal("alice", frozenset(), time.time() + 30)
    ticket, expires_at = auth.issue_ticket(principal)
    assert expires_at <= principal.expires_at
    assert auth.ticket(ticket).user_id == "alice"
    # Single purpose: neither credential works as the other.
    assert code_of(lambda: auth.bearer(f"Bearer {ticket}")) == "invalid_token"
    token = auth.issue_token("alice")
    assert code_of(lambda: auth.ticket(token)) == "invalid_ticket"


def test_an_expired_ticket_says_so():
    auth = Authenticator(SECRET, ticket_ttl=1)
    ticket, _ = auth.issue_ticket(Principal("alice", frozenset(), None))
    time.sleep(2.1)
    assert code_of(lambda: auth.ticket(ticket)) == "ticket_expired"


def test_without_a_secret_authentication_answers_not_configured():
    with pytest.raises(AuthError) as caught:
        Authenticator(None).bearer("Bearer x")
    assert (caught.value.code, caught.value.status) == ("auth_not_configured", 503)


def test_tickets_are_redacted_from_access_log_lines():
    assert redact_query("/events?ticket=abc.def&lastEventId=4") == (
        "/events?ticket=REDACTED&lastEventId=4"
    )
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s"',
        ("1.2.3.4", "GET", "/events?ticket=s3cret"),
        None,
    )
    RedactTickets().filter(record)
    assert "s3cret" not in record.getMessage()
