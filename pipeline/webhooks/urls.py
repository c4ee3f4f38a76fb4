"""Which URLs a webhook may reach: http or https, and, unless WEBHOOK_ALLOW_PRIVATE_URLS, only
public addresses.

The address check runs at subscription and again before every delivery, on the addresses the
host resolves to then, and the delivery connects to the very address it checked: a name that
resolves to a public address when subscribed and to 127.0.0.1 later (DNS rebinding) is
refused at delivery, not followed.
"""
from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from pipeline.errors import FieldError, ValidationFailed
from pipeline.text import storable
from pipeline.webhooks import UrlNotAllowed

#: The longest URL a subscription may have, in characters.
URL_LENGTH_MAX = 2_000
SCHEMES = {"http": 80, "https": 443}
#: The longest wait for the resolver, in seconds: getaddrinfo itself has no timeout.
RESOLVE_TIMEOUT_S = 5.0
#: Lookups at once per process; a hung lookup keeps its thread, and the next ones time out instead.
RESOLVERS_MAX = 4
_resolvers = concurrent.futures.ThreadPoolExecutor(max_workers=RESOLVERS_MAX, thread_name_prefix="resolve")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: host, port -> every address the host resolves to; raises OSError when it does not resolve.
Resolver = Callable[[str, int], list[Address]]


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


def parse_url(url: object) -> Target:
    """The scheme, host and port of a webhook URL. Raises ValidationFailed (not a URL) or
    UrlNotAllowed (a scheme other than http or https)."""
    if (not isinstance(url, str) or not 1 <= len(url) <= URL_LENGTH_MAX or url != url.strip()
            or not storable(url) or any(ord(character) < 33 or ord(character) == 127 for character in url)):
        raise ValidationFailed("url is not valid", [FieldError(
            "url", f"an http or https URL of at most {URL_LENGTH_MAX} characters, without spaces")])
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
    except ValueError:
        raise ValidationFailed("url is not valid", [FieldError("url", "not a URL")]) from None
    if parts.scheme.lower() not in SCHEMES:
        raise UrlNotAllowed("only http and https URLs are accepted", [FieldError("url", "use http or https")])
    if not host:
        raise ValidationFailed("url is not valid", [FieldError("url", "a URL with a host")])
    if parts.username is not None or parts.password is not None:
        raise ValidationFailed("url is not valid", [FieldError(
            "url", "no user or password in the URL: deliveries are signed instead")])
    return Target(parts.scheme.lower(), host, port or SCHEMES[parts.scheme.lower()])


def is_public(address: Address) -> bool:
    """Global unicast only: not loopback, private, link-local, shared (CGNAT), multicast, reserved."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def resolve(host: str, port: int) -> list[Address]:
    """Every address `host` resolves to (a literal address is itself), within RESOLVE_TIMEOUT_S.
    Raises OSError."""
    lookup = _resolvers.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        found = lookup.result(timeout=RESOLVE_TIMEOUT_S)
    except concurrent.futures.TimeoutError:
        raise OSError(f"no answer from the resolver within {RESOLVE_TIMEOUT_S} s") from None
    return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in found))


def allowed_addresses(target: Target, allow_private: bool, resolver: Resolver = resolve) -> list[Address]:
    """The addresses of `target` a delivery may connect to. Raises UrlNotAllowed when the host
    does not resolve or, unless `allow_private`, when any address it resolves to is not public
    (one private answer among public ones is refused whole: the client may pick either)."""
    try:
        addresses = resolver(target.host, target.port)
    except (OSError, UnicodeError, ValueError) as error:
        raise UrlNotAllowed(f"the host {target.host} does not resolve: {error}",
                            [FieldError("url", "a host that resolves")]) from None
    if not addresses:
        raise UrlNotAllowed(f"the host {target.host} has no address", [FieldError("url", "a host that resolves")])
    refused = [str(address) for address in addresses if not is_public(address)]
    if refused and not allow_private:
        raise UrlNotAllowed(f"the host {target.host} resolves to {', '.join(refused)}: loopback and private"
                            " addresses are refused unless WEBHOOK_ALLOW_PRIVATE_URLS=true",
                            [FieldError("url", "a public address")])
    return addresses


def check_subscription_url(url: object, allow_private: bool, resolver: Resolver = resolve) -> str:
    """The URL, once it passed `parse_url` and, unless `allow_private`, the address check."""
    target = parse_url(url)
    if not allow_private:
        allowed_addresses(target, allow_private, resolver)
    return url
