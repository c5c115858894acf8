"""URLs and messages made safe to print: nothing of a URL's userinfo or query ever shown.

A password with an unencoded `@`, `/`, `?` or `#` moves part of itself into what a parser calls
the host, port, path or query (`postgresql://mon:p@ssword@db/x` has host `ssword@db` to
SQLAlchemy and libpq). So a URL is shown only when it splits one way; otherwise it is shown as
MALFORMED and nothing of it is printed. A secret is never masked by replacing its text inside
other text: a short password would turn `OperationalError` into `O***erationalError` and leave
the rest of the message in the clear.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

MALFORMED = "(malformed URL, not shown)"

_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
# host (a name, an IPv4 address or a bracketed IPv6 one), then an optional numeric port
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Za-z:.%]+\]|[^\s:/?#@\[\]]*)(?::(?P<port>\d+))?")


class MalformedUrl(ValueError):
    """The text does not split into URL parts one way only; the message never repeats it."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(
            reason
            or "malformed URL (percent-encode @ / ? # : in the user name and password, "
            "e.g. @ as %40)"
        )


@dataclass(frozen=True)
class Parts:
    """A URL split without ambiguity. `display` holds no userinfo and no query."""

    scheme: str
    has_userinfo: bool
    host: str
    port: int | None
    path: str

    @property
    def display(self) -> str:
        userinfo = "***@" if self.has_userinfo else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{self.scheme}://{userinfo}{self.host}{port}{self.path}"


def split(url: str) -> Parts:
    """The URL's parts, or MalformedUrl when a character of the userinfo could have ended up
    in another part: more than one `@`, an `@` after the authority, or a port that is not a
    number (`u:pa/ss@h` reads as host `u`, port `pa`)."""
    text = url.strip()
    scheme = _SCHEME.match(text)
    if scheme is None:
        raise MalformedUrl("not a URL (expected scheme://host/...)")
    if any(c.isspace() for c in text):
        raise MalformedUrl()
    rest = text[scheme.end() :]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, after = rest[:end], rest[end:]
    if authority.count("@") > 1 or "@" in after:
        raise MalformedUrl()
    _, at, hostport = authority.rpartition("@")
    found = _HOST_PORT.fullmatch(hostport)
    if found is None:
        raise MalformedUrl()
    path = re.split(r"[?#]", after, maxsplit=1)[0]
    port = found.group("port")
    return Parts(
        scheme=scheme.group()[:-3],
        has_userinfo=bool(at),
        host=found.group("host"),
        port=int(port) if port else None,
        path=path,
    )


def url(value: object) -> str:
    """A URL (text or sqlalchemy URL) as it may be printed: `scheme://***@host:port/path`,
    without the query (it can carry `password=`), or MALFORMED."""
    render = getattr(value, "render_as_string", None)
    raw = render(hide_password=False) if callable(render) else value
    if not isinstance(raw, str):
        return MALFORMED
    try:
        return split(raw).display
    except MalformedUrl:
        return MALFORMED


def text(message: str, arguments: Iterable[str] = ()) -> str:
    """`message` with every URL in it shown by `url()`. `arguments` are the raw command-line
    arguments the message may quote: each one holding `://` is replaced whole, so a URL that
    contains a space is not cut in two with its second half left in the clear."""
    for argument in sorted(arguments, key=len, reverse=True):
        if "://" not in argument:
            continue
        flag, eq, value = argument.partition("=")
        if eq and "://" not in flag:
            message = message.replace(argument, f"{flag}={url(value)}")
        message = message.replace(argument, url(argument))
    return re.sub(rf"{_SCHEME.pattern}\S*", _token, message)


def _token(found: re.Match[str]) -> str:
    # A URL in a message may be followed by a quote, a bracket or punctuation; the URL itself
    # may contain one, so the whole token is refused when the shorter reading does not split.
    token = found.group()
    bare = token.rstrip("'\",;:.)]")
    shown = url(bare)
    return shown + token[len(bare) :] if shown != MALFORMED else MALFORMED
