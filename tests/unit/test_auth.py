"""Bearer tokens and stream tickets."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mediajobs.errors import AuthError
from mediajobs.service.auth import (
    Authenticator,
    JwksKeys,
    Principal,
    RedactTickets,
    redact_query,
)

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


def test_a_verified_token_is_remembered_until_it_expires(monkeypatch):
    auth = Authenticator(SECRET)
    token = auth.issue_token("alice", ttl=60)
    first = auth.bearer(f"Bearer {token}")
    decoded = []
    monkeypatch.setattr(jwt, "decode", lambda *a, **k: decoded.append(a) or {})
    assert auth.bearer(f"Bearer {token}") is first  # no second verification
    assert decoded == []
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 61)  # past its exp: verified again
    with pytest.raises(AuthError):
        auth.bearer(f"Bearer {token}")
    assert len(decoded) == 1


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


@pytest.mark.parametrize(
    "sub", ["auth0|5f7c8ec7", "google-oauth2|1234", "ann@example.com", "x" * 255, "日本🙂"]
)
def test_every_sub_an_identity_provider_issues_is_a_user_id(sub):
    auth = Authenticator(SECRET)
    assert auth.bearer(f"Bearer {auth.issue_token(sub)}").user_id == sub


@pytest.mark.parametrize("sub", ["x" * 256, "a\nb", "\ud800", " ", ""])
def test_subs_no_provider_issues_are_invalid_tokens(sub):
    auth = Authenticator(SECRET)
    claims = {"sub": sub, "exp": int(time.time()) + 60}
    token = jwt.encode(claims, SECRET, algorithm="HS256")
    assert code_of(lambda: auth.bearer(f"Bearer {token}")) == "invalid_token"
    with pytest.raises(ValueError, match="a user id is"):  # nor do we issue one
        auth.issue_token(sub)


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
    auth = Authenticator(SECRET, ticket_ttl=600)
    # A ticket never outlives its token: one minted with a token that ran out a minute ago
    # is already expired (no waiting on the clock).
    ticket, expires_at = auth.issue_ticket(Principal("alice", frozenset(), time.time() - 60))
    assert expires_at < time.time()
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


def _keys() -> dict[str, tuple[Any, str]]:
    """Private key objects and their public PEMs: RSA for RS256, P-256 for ES256."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    return {
        "RS256": (rsa_key, rsa_key.public_key().public_bytes(*pem).decode()),
        "ES256": (ec_key, ec_key.public_key().public_bytes(*pem).decode()),
    }


def _hs256_by_hand(claims: dict[str, Any], key: bytes) -> str:
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def _claims(user: str = "carol") -> dict[str, Any]:
    return {"sub": user, "exp": int(time.time()) + 600, "roles": ["admin"]}


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_tokens_of_an_identity_provider_verify_with_its_public_key(algorithm: str) -> None:
    private, public_pem = _keys()[algorithm]
    auth = Authenticator(SECRET, public_key=public_pem)
    token = jwt.encode(_claims(), private, algorithm=algorithm)
    principal = auth.bearer(f"Bearer {token}")
    assert (principal.user_id, principal.is_admin) == ("carol", True)
    # Our own HS256 tokens (CLI, dev) still work next to it.
    assert auth.bearer(f"Bearer {auth.issue_token('dave')}").user_id == "dave"
    # Another key's signature, and the classic confusion (HS256 keyed with the public
    # PEM), are refused.
    other, _ = _keys()[algorithm]
    with pytest.raises(AuthError):
        auth.bearer(f"Bearer {jwt.encode(_claims(), other, algorithm=algorithm)}")
    forged = _hs256_by_hand(_claims(), public_pem.encode())  # PyJWT refuses to make it
    with pytest.raises(AuthError):
        auth.bearer(f"Bearer {forged}")
    with pytest.raises(AuthError) as info:
        auth.bearer(f"Bearer {jwt.encode(_claims(), 'x' * 64, algorithm='HS384')}")
    assert info.value.code == "invalid_token"


def test_tokens_verify_with_the_keys_of_a_jwks_url_by_key_id() -> None:
    private, _ = _keys()["RS256"]
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    served = {"keys": [{**jwk, "kid": "key-1", "alg": "RS256", "use": "sig"}]}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(served).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        jwks = JwksKeys(f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json")
        auth = Authenticator(SECRET, jwks=jwks)
        jwks.refresh()
        token = jwt.encode(_claims(), private, algorithm="RS256", headers={"kid": "key-1"})
        assert auth.bearer(f"Bearer {token}").user_id == "carol"
        unknown = jwt.encode(_claims(), private, algorithm="RS256", headers={"kid": "key-2"})
        with pytest.raises(AuthError) as info:
            auth.bearer(f"Bearer {unknown}")
        assert info.value.code == "unknown_signing_key"
        # The provider rotates: the new kid is fetched and then accepted.
        served["keys"].append({**jwk, "kid": "key-2", "alg": "RS256"})
        jwks.refresh()
        assert auth.bearer(f"Bearer {unknown}").user_id == "carol"
    finally:
        server.shutdown()
        server.server_close()
