"""Who may use the server: an optional bearer key, and no open server on a public address.

With an API key every route needs it: the OpenAI routes (the ``openai`` client sends its
``api_key`` as ``Authorization: Bearer KEY``) and the Bedrock routes too, because a key
that guarded only half the server would leave the other half open to the network. A
Bedrock client sends it as its access key id (``AWS_ACCESS_KEY_ID=KEY``; the signature is
not checked, the server knows no secret), or as a bearer token where it can
(:func:`key_matches`). Without a key nothing is checked, as before: the server is meant
for loopback, where only this machine can reach it. :func:`check_exposure` enforces that:
a non-loopback address without a key is refused before anything binds.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import socket
from collections.abc import Mapping

from bedrock_mistral.errors import Arg, ConfigurationError, Fix

__all__ = ["API_KEY_ENV", "check_exposure", "is_loopback", "key_matches"]

API_KEY_ENV = "BEDROCK_MISTRAL_SERVE_API_KEY"
_SIGV4 = "AWS4-HMAC-SHA256"
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")

_EXPOSED_FIX = Fix(
    "pass {} (clients then send it as a bearer token), or {} when the network is already "
    "private (a container's port published on loopback, a firewalled host)",
    Arg("api_key"),
    Arg("insecure_no_auth", "True"),
    cli=f"pass --api-key KEY (or set {API_KEY_ENV}), or --insecure-no-auth when the network is "
    "already private (a container's port published on loopback, a firewalled host)",
)


def _addresses(host: str) -> list[str] | None:
    """The addresses ``host`` stands for (as binding would resolve it); None if it cannot."""
    name = host.strip().strip("[]")
    try:
        return [str(ipaddress.ip_address(name))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    return [str(info[4][0]).split("%", 1)[0] for info in infos]


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine (127.0.0.0/8, ::1, or a name for them).

    An empty host binds every interface, so it is not loopback.
    """
    addresses = _addresses(host) if host.strip() else None
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses or ())


def check_exposure(host: str, api_key: str | None, *, insecure_no_auth: bool = False) -> None:
    """Refuse to serve a non-loopback address with no key, before anything binds.

    A host that does not resolve is left to the bind, whose error names ``--host``.
    """
    if api_key or insecure_no_auth or is_loopback(host):
        return
    if host.strip() and _addresses(host) is None:
        return
    raise ConfigurationError(
        f"refusing to listen on {host} without an API key: anyone who can reach that address "
        "could use the backend (with the bedrock backend, your AWS account)",
        fix=_EXPOSED_FIX,
    )


def key_matches(headers: Mapping[str, str], api_key: str) -> bool:
    """Whether the request carries ``api_key`` (compared in constant time).

    As ``Authorization: Bearer KEY``, or as the access key id of a SigV4 signature
    (``Credential=KEY/...``): botocore sends bearer tokens over HTTPS only, so a Bedrock
    client on plain HTTP uses the key as its ``AWS_ACCESS_KEY_ID`` (any secret). Either way
    the key travels readable on an unencrypted connection; put TLS in front of the server
    on a network you do not trust.
    """
    scheme, _, rest = headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer":
        given = rest.strip()
    elif scheme == _SIGV4:
        match = _CREDENTIAL.search(rest)
        given = match.group(1) if match else ""
    else:
        return False
    return hmac.compare_digest(given.encode("utf-8"), api_key.encode("utf-8"))
