"""Request gates of security.md S2-S7 as pure functions of headers (no aiohttp, no I/O)."""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

ANY_ORIGIN = "*"

# Mutating routes that accept non-JSON bodies from same-origin pages and header-less clients
# (security.md S5, exemptions): cross-site signs on these are refused with 403, never 415.
NON_JSON_MUTATIONS = re.compile(r"^(/api)?/(upload/(image|mask)|userdata/.+)$")

INLINE_TYPES = frozenset({"image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp", "image/avif"})

SANDBOX_CSP = ("default-src 'none'; img-src 'self' data: blob:; media-src 'self' blob:; "
               "style-src 'unsafe-inline'; sandbox")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class SecurityPolicy:
    """What the gates allow: the token, extra host names and extra origins from the CLI."""

    token: str | None = None
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()   # --allowed-origin values (may include "null")
    cors_origins: tuple[str, ...] = ()      # --enable-cors-header values ("*" = any origin)


@dataclass(frozen=True)
class Rejection:
    """A refused request: the status and the JSON body to answer with."""

    status: int
    body: dict
    reason: str
    headers: tuple[tuple[str, str], ...] = ()


def split_host(host: str) -> tuple[str, int | None]:
    """Host header -> (lower-cased hostname without IPv6 brackets, port or None)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        name, rest = host[1:end], host[end + 1:]
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, port = host.split(":")
    else:
        name, port = host, ""
    return name.rstrip("."), int(port) if port.isdigit() else None


def is_ip_literal(name: str) -> bool:
    """True for any IPv4/IPv6 address literal."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def is_loopback_name(name: str) -> bool:
    """localhost, *.localhost, 127.0.0.0/8 and ::1 (security.md S4 rule 1)."""
    name = name.lower().strip("[]").rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_allowed(hostname: str, allowed_hosts: tuple[str, ...]) -> bool:
    """DNS-rebinding guard: loopback names, IP literals and --allowed-host names pass (S3)."""
    if is_loopback_name(hostname) or is_ip_literal(hostname):
        return True
    for pattern in allowed_hosts:
        pattern = pattern.lower()
        if pattern.startswith("*."):
            if hostname.endswith(pattern[1:]) and hostname != pattern[2:]:
                return True
        elif hostname == pattern:
            return True
    return False


def origin_matches_host(origin: str, host: str) -> bool:
    """True when Origin is the request's own origin (loopback aliases equal, ports compared)."""
    try:
        parts = urlsplit(origin)
        origin_name = (parts.hostname or "").lower()
        origin_port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return False
    if not origin_name:
        return False
    host_name, host_port = split_host(host)
    same_name = origin_name == host_name or (is_loopback_name(origin_name) and is_loopback_name(host_name))
    return same_name and (host_port is None or origin_port == host_port)


def _normalise_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def origin_configured(origin: str, policy: SecurityPolicy) -> bool:
    """True when the origin was explicitly allowed (--allowed-origin / --enable-cors-header)."""
    wanted = _normalise_origin(origin)
    allowed = {_normalise_origin(o) for o in policy.allowed_origins + policy.cors_origins}
    if wanted in allowed:
        return True
    return ANY_ORIGIN in policy.cors_origins and wanted != "null"


def token_presented(headers: Mapping[str, str], cookies: Mapping[str, str], token: str) -> bool:
    """Constant-time check of the Bearer header or the kiln_token cookie (S2)."""
    expected = token.encode()
    auth = headers.get("Authorization", "")
    if auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), expected):
        return True
    cookie = cookies.get("kiln_token")
    return cookie is not None and hmac.compare_digest(cookie.encode(), expected)


def _browser_signs(headers: Mapping[str, str], own_origin: bool) -> bool:
    """Signs that a request comes from a browser context other than Kiln's page (S5 rule 2)."""
    if "Origin" in headers and not own_origin:
        return True
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() != "same-origin":
        return True
    if headers.get("Sec-Fetch-Mode", "").lower() == "navigate":
        return True
    if headers.get("Sec-Fetch-Dest", "").lower() in ("document", "iframe", "frame"):
        return True
    return "text/html" in headers.get("Accept", "").lower()


def is_json_content_type(content_type: str) -> bool:
    """application/json with any parameters."""
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def check_request(method: str, path: str, headers: Mapping[str, str], cookies: Mapping[str, str],
                  policy: SecurityPolicy) -> Rejection | None:
    """Run S3 host -> S2 token -> S4 origin/fetch-metadata -> S5 content-type; None means pass.

    The `?token=` redirect on `GET /` is handled by the caller before this check.
    """
    host = headers.get("Host")
    if not host:
        return Rejection(400, {"error": "missing Host header"}, "no Host header")
    hostname, _ = split_host(host)
    if not host_allowed(hostname, policy.allowed_hosts):
        return Rejection(403, {"error": "host not allowed", "hint": "start Kiln with --allowed-host <name>"},
                         f"host {hostname!r} not allowed")
    if policy.token is not None and not token_presented(headers, cookies, policy.token):
        return Rejection(401, {"error": "unauthorized"}, "missing or wrong token",
                         (("WWW-Authenticate", "Bearer"),))
    origin = headers.get("Origin")
    own_origin = origin is not None and origin != "null" and origin_matches_host(origin, host)
    configured = origin is not None and origin_configured(origin, policy)
    if origin is not None and not own_origin and not configured:
        return Rejection(403, {"error": "cross-origin request blocked"}, f"origin {origin!r}")
    site = headers.get("Sec-Fetch-Site", "").lower()
    if site in ("cross-site", "same-site") and not configured:
        navigation = (method in ("GET", "HEAD") and path == "/"
                      and headers.get("Sec-Fetch-Mode", "").lower() == "navigate")
        if not navigation:
            return Rejection(403, {"error": "cross-origin request blocked"}, f"Sec-Fetch-Site {site}")
    if method in SAFE_METHODS:
        return None
    if _browser_signs(headers, own_origin):
        if NON_JSON_MUTATIONS.match(path):
            return Rejection(403, {"error": "cross-origin request blocked"}, "browser form post to an upload route")
        if not is_json_content_type(headers.get("Content-Type", "")):
            return Rejection(415, {"error": "Content-Type must be application/json"}, "non-JSON browser post")
    return None


def cors_headers(origin: str | None, policy: SecurityPolicy) -> dict[str, str]:
    """Access-Control-* headers for a request from a configured CORS origin (S4 rule 4)."""
    if origin is None or not policy.cors_origins:
        return {}
    common = {"Access-Control-Allow-Methods": "GET, POST, DELETE, PATCH, OPTIONS",
              "Access-Control-Allow-Headers": "Content-Type, Authorization, Comfy-User"}
    wanted = _normalise_origin(origin)
    if wanted in {_normalise_origin(o) for o in policy.cors_origins if o != ANY_ORIGIN}:
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Allow-Credentials": "true", **common}
    if ANY_ORIGIN in policy.cors_origins and wanted != "null":
        return {"Access-Control-Allow-Origin": "*", **common}
    return {}


def startup_problem(listen: tuple[str, ...], policy: SecurityPolicy, allow_unauthenticated_remote: bool) -> str | None:
    """Why the server must refuse to start (S1, S4 rule 4), or None."""
    if ANY_ORIGIN in policy.cors_origins and policy.token is None:
        return ("--enable-cors-header without an origin (or '*') allows any web page; "
                "it needs a token: pass --token, --token-file or --generate-token")
    remote = [a for a in listen if not is_loopback_name(a)]
    if remote and policy.token is None and not allow_unauthenticated_remote:
        return (f"refusing to listen on {', '.join(remote)} without authentication: pass --token, "
                "--token-file or --generate-token (or --allow-unauthenticated-remote behind an "
                "authenticating proxy)")
    return None


def bad_relative_name(name: str) -> bool:
    """True for names that must never reach the file system: NUL, absolute, drive, `..` parts."""
    if not name or "\x00" in name or name[0] in "/\\" or re.match(r"^[A-Za-z]:", name):
        return True
    return ".." in re.split(r"[\\/]", name)


QUERY_INT_LIMIT = 2 ** 53   # beyond any queue or history size, well inside SQLite's 64-bit INTEGER


def query_int(value: str | None) -> int | None:
    """A query parameter as an int clamped to ±QUERY_INT_LIMIT; None when absent, ValueError when not an int.

    Clamping keeps a huge `max_items`/`offset`/`limit` meaning "all" instead of overflowing SQLite.
    """
    if value is None:
        return None
    return max(-QUERY_INT_LIMIT, min(int(value), QUERY_INT_LIMIT))


def safe_upload_name(name: str) -> bool:
    """An upload file name: one plain component, no separators, no leading dot (api.md §8.2)."""
    return bool(name) and not any(c in name for c in "/\\\x00") and not name.startswith(".")


def split_annotation(name: str) -> tuple[str, str | None]:
    """'x.png [output]' -> ('x.png', 'output'); an untagged name -> (name, None)."""
    for tag in ("input", "output", "temp"):
        suffix = f" [{tag}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], tag
    return name, None


def content_disposition(kind: str, filename: str) -> str:
    """`inline`/`attachment` header value with a sanitised name (S7 rule 2)."""
    clean = "".join(c for c in filename if c not in '"\\' and ord(c) >= 32 and ord(c) != 127)
    ascii_name = clean.encode("ascii", "replace").decode().replace("?", "_")
    value = f'{kind}; filename="{ascii_name}"'
    if ascii_name != clean:
        value += f"; filename*=UTF-8''{quote(clean, safe='')}"
    return value


def served_inline(content_type: str) -> bool:
    """Raster images, video and audio are safe inline; everything else downloads (S7 rule 2)."""
    return content_type in INLINE_TYPES or content_type.startswith(("video/", "audio/"))
