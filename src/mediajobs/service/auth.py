"""Who is calling: bearer JWTs, and short-lived stream tickets for ``EventSource``.

* A bearer token is a JWT: HS256 with MEDIAJOBS_JWT_SECRET (what ``mediajobs token`` and dev
  mode issue), or RS256/ES256 from an identity provider, verified with
  MEDIAJOBS_JWT_PUBLIC_KEY or the keys of MEDIAJOBS_JWT_JWKS_URL (by ``kid``). The token's
  ``alg`` picks the key, and each key only verifies its own kind, so a public key can never
  be used as an HMAC secret. ``sub`` is the user id and ``exp`` is required; issuer and
  audience are checked when configured; ``roles`` lists roles (``admin``); ``scope`` (a
  space-separated string, RFC 8693 section 4.2) or ``scp`` (a list, as some identity
  providers issue it) grants scopes to a service token: ``collections:manage`` lets it
  manage any entity's collection, as an admin may.
* A stream ticket exists because ``EventSource`` cannot send headers. It is minted by
  ``POST /events/ticket`` for a bearer-authenticated user, lives MEDIAJOBS_STREAM_TICKET_TTL
  seconds, and is signed with a key derived from the secret for this one purpose: a ticket
  is never accepted as a bearer token, nor a token as a ticket. A stream opened with it ends
  when it expires. Tickets travel in the query string, so access logs redact them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cachetools import TTLCache
from jwt.types import Options

from mediajobs.config import Settings
from mediajobs.errors import AuthError

log = logging.getLogger(__name__)

ALGORITHM = "HS256"
ASYMMETRIC = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512")
JWKS_REFRESH_EVERY = 300.0  # seconds between JWKS fetches
JWKS_MIN_INTERVAL = 10.0  # an unknown kid triggers a fetch at most this often
TICKET_TYPE = "stream"
MANAGE_COLLECTIONS = "collections:manage"  # the scope of a service token managing any entity
_TICKET_KEY_INFO = b"mediajobs stream ticket v1"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    user_id: str
    roles: frozenset[str]
    expires_at: float | None  # epoch seconds; the stream it opens ends then
    scopes: frozenset[str] = frozenset()

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def manages_collections(self) -> bool:
        """May sync and read any entity's collection (an admin, or the scope
        ``collections:manage``)."""
        return self.is_admin or MANAGE_COLLECTIONS in self.scopes


# Verified bearer tokens kept per process (``Authenticator.bearer``): how many, how long.
VERIFIED_CACHE_SIZE = 10_000
VERIFIED_TTL = 60.0


class JwksKeys:
    """The signing keys of a JWKS URL, fetched at start, every few minutes, and soon after a
    token names a key id not seen yet. Verification never waits on the network."""

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self._timeout = timeout
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._wanted = False

    def refresh(self) -> None:
        """Fetch the key set (blocking: call it from a thread)."""
        request = urllib.request.Request(self.url, headers={"accept": "application/json"})
        with urllib.request.urlopen(request, timeout=self._timeout) as response:
            document = json.load(response)
        keys = {}
        for entry in jwt.PyJWKSet.from_dict(document).keys:
            if entry.key_id and entry.algorithm_name in ASYMMETRIC:
                keys[entry.key_id] = entry.key
        self._keys = keys
        self._fetched_at = time.monotonic()
        self._wanted = False

    def key(self, kid: str | None) -> Any:
        found = self._keys.get(kid or "")
        if found is None:
            self._wanted = True
        return found

    def due(self) -> bool:
        age = time.monotonic() - self._fetched_at
        return age >= JWKS_REFRESH_EVERY or (self._wanted and age >= JWKS_MIN_INTERVAL)

    async def keep_fresh(self) -> None:
        """Runs for the life of the process (the app's lifespan starts it)."""
        while True:
            if self.due():
                try:
                    await asyncio.to_thread(self.refresh)
                except Exception as exc:  # keep the keys we have; try again later
                    log.warning("JWKS refresh from %s failed: %s", self.url, exc)
                    self._fetched_at = time.monotonic() - JWKS_REFRESH_EVERY + JWKS_MIN_INTERVAL
            await asyncio.sleep(1.0)


class Authenticator:
    """Verifies bearer tokens and stream tickets, and issues both (tokens for the CLI and
    development, tickets for browsers)."""

    def __init__(
        self,
        secret: str | None,
        *,
        issuer: str | None = None,
        audience: str | None = None,
        ticket_ttl: float = 600.0,
        public_key: str | None = None,
        jwks: JwksKeys | None = None,
    ) -> None:
        self._secret = secret
        self._public_key = public_key
        self.jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self.ticket_ttl = ticket_ttl
        self._ticket_key = (
            None
            if secret is None
            else hmac.new(secret.encode(), _TICKET_KEY_INFO, hashlib.sha256).digest()
        )
        # Tokens verified in the last VERIFIED_TTL seconds -> (caller, exp): a client sends
        # the same token with every request, and verifying it again costs a third of a
        # small request's time. An entry never outlives its token's exp.
        self._verified: TTLCache[str, tuple[Principal, float]] = TTLCache(
            maxsize=VERIFIED_CACHE_SIZE, ttl=VERIFIED_TTL
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator:
        return cls(
            settings.jwt_secret,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            ticket_ttl=settings.stream_ticket_ttl,
            public_key=settings.jwt_public_key,
            jwks=JwksKeys(settings.jwt_jwks_url) if settings.jwt_jwks_url else None,
        )

    # -- bearer tokens -----------------------------------------------------------------

    def bearer(self, authorization: str | None) -> Principal:
        """The caller of an ``Authorization: Bearer`` header; raises ``AuthError``."""
        if not authorization:
            raise AuthError("missing_credentials", "send Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("invalid_token", "the Authorization header is not 'Bearer <token>'")
        cached = self._verified.get(token)
        if cached is not None and cached[1] > time.time():
            return cached[0]
        if self._public_key is None and self.jwks is None:
            self._require_secret()  # nothing could verify any token: not configured
        key, algorithm = self._verification_key(token.strip())
        options: Options = {"require": ["exp", "sub"]}
        if self._audience is None:
            options["verify_aud"] = False
        try:
            claims = jwt.decode(
                token.strip(),
                key,
                algorithms=[algorithm],
                issuer=self._issuer,
                audience=self._audience,
                options=options,
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired") from None
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid_token", f"the token is not valid: {exc}") from None
        principal = _principal(claims)
        self._verified[token] = (principal, float(claims["exp"]))
        return principal

    def _verification_key(self, token: str) -> tuple[Any, str]:
        """The key for this token's ``alg`` (and ``kid``), and that one algorithm."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise AuthError("invalid_token", f"the token is not valid: {exc}") from None
        algorithm = header.get("alg")
        if algorithm == ALGORITHM:
            return self._require_secret(), ALGORITHM
        if algorithm not in ASYMMETRIC:
            raise AuthError("invalid_token", f"tokens signed with {algorithm!r} are not accepted")
        if self.jwks is not None:
            key = self.jwks.key(header.get("kid"))
            if key is None:
                raise AuthError("unknown_signing_key", "the token's signing key (kid) is unknown")
            return key, str(algorithm)
        if self._public_key is not None:
            return self._public_key, str(algorithm)
        raise AuthError("invalid_token", "no public key is configured for signed tokens")

    def issue_token(
        self,
        user_id: str,
        *,
        roles: Sequence[str] = (),
        scopes: Sequence[str] = (),
        ttl: float = 3600.0,
    ) -> str:
        """A bearer token for ``user_id`` (``mediajobs token``, development, tests) with
        ``roles`` and ``scopes`` (the ``scope`` claim). Raises ``ValueError`` for a user id
        no token of ours may carry (``is_user_id``)."""
        if not is_user_id(user_id):
            raise ValueError(
                f"a user id is 1-{MAX_USER_ID} characters, not blank, without control characters"
            )
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + int(ttl)}
        if roles:
            claims["roles"] = list(roles)
        if scopes:
            claims["scope"] = " ".join(scopes)
        if self._issuer:
            claims["iss"] = self._issuer
        if self._audience:
            claims["aud"] = self._audience
        return jwt.encode(claims, self._require_secret(), algorithm=ALGORITHM)

    # -- stream tickets ----------------------------------------------------------------

    def issue_ticket(self, principal: Principal) -> tuple[str, float]:
        """A stream ticket for ``principal`` and its expiry (epoch seconds); it never
        outlives the token it was minted with."""
        now = time.time()
        expires_at = now + self.ticket_ttl
        if principal.expires_at is not None:
            expires_at = min(expires_at, principal.expires_at)
        claims = {
            "sub": principal.user_id,
            "typ": TICKET_TYPE,
            "iat": int(now),
            "exp": int(expires_at),
        }
        assert self._ticket_key is not None  # _require_secret passed for the bearer
        return jwt.encode(claims, self._ticket_key, algorithm=ALGORITHM), float(int(expires_at))

    def ticket(self, ticket: str) -> Principal:
        """The caller of a stream ticket; raises ``AuthError`` (``ticket_expired`` when it
        ran out: fetch a new one and reconnect)."""
        self._require_secret()
        assert self._ticket_key is not None
        try:
            claims = jwt.decode(
                ticket,
                self._ticket_key,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "sub", "typ"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("ticket_expired", "the stream ticket has expired") from None
        except jwt.InvalidTokenError:
            raise AuthError("invalid_ticket", "the stream ticket is not valid") from None
        if claims.get("typ") != TICKET_TYPE:
            raise AuthError("invalid_ticket", "not a stream ticket")
        return Principal(str(claims["sub"]), frozenset(), float(claims["exp"]))

    def _require_secret(self) -> str:
        if self._secret is None:
            raise AuthError(
                "auth_not_configured",
                "authentication is not configured: set MEDIAJOBS_JWT_SECRET",
                status=503,
            )
        return self._secret


MAX_USER_ID = 255  # OpenID Connect Core 1.0 section 2: a sub is at most 255 ASCII characters


def is_user_id(value: object) -> bool:
    """Whether ``value`` can be a token's ``sub`` (the owner id): a non-blank string of at
    most 255 characters, without control characters or lone surrogates (not text Postgres
    can store)."""
    return (
        isinstance(value, str)
        and bool(value.strip())
        and len(value) <= MAX_USER_ID
        and not any(ord(ch) < 32 or ord(ch) == 127 or 0xD800 <= ord(ch) <= 0xDFFF for ch in value)
    )


def _principal(claims: dict[str, Any]) -> Principal:
    user_id = claims.get("sub")
    if not is_user_id(user_id):
        raise AuthError("invalid_token", "the token's sub is not a user id")
    assert isinstance(user_id, str)
    roles = claims.get("roles") or []
    if not isinstance(roles, list) or not all(isinstance(role, str) for role in roles):
        raise AuthError("invalid_token", "the token's roles claim is not a list of strings")
    return Principal(user_id, frozenset(roles), float(claims["exp"]), _scopes(claims))


def _scopes(claims: dict[str, Any]) -> frozenset[str]:
    """The token's scopes: ``scope`` as a space-separated string (RFC 8693 section 4.2,
    RFC 9068 section 2.2.3) or ``scp`` as a list of strings; raises ``AuthError`` for
    another shape."""
    scope = claims.get("scope")
    if scope is not None:
        if not isinstance(scope, str):
            raise AuthError("invalid_token", "the token's scope claim is not a string")
        return frozenset(scope.split())
    scp = claims.get("scp")
    if scp is None:
        return frozenset()
    if not isinstance(scp, list) or not all(isinstance(item, str) for item in scp):
        raise AuthError("invalid_token", "the token's scp claim is not a list of strings")
    return frozenset(scp)


# Stream tickets, tokens and the signatures of the development store's presigned URLs.
_SECRET_QUERY = re.compile(r"((?:^|[?&])(?:ticket|access_token|sig)=)[^&\s\"]*")


def redact_query(text: str) -> str:
    """``text`` with ticket, token and signature values in query strings replaced by
    ``REDACTED``."""
    return _SECRET_QUERY.sub(r"\1REDACTED", text)


class RedactTickets(logging.Filter):
    """Keeps stream tickets and presigned URLs' signatures out of access logs (uvicorn logs
    the full path and query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                redact_query(arg) if isinstance(arg, str) and "=" in arg else arg
                for arg in record.args
            )
        return True
