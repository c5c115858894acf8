"""A metrics endpoint that renders each label set once: prometheus-client's exposition, cached.

prometheus-client's text and OpenMetrics exposition validate, escape and format every label
of every sample at every scrape; on a host of 64 workers x 10 pools that is most of a
scrape. A label set of a live worker's pool never changes, so a `Labelled` keeps its sample
line up to the value, as prometheus-client's own encoder wrote it (rendered once per format
with a value of 0 and cut before it), and a scrape only formats the value with
prometheus-client's floatToGoString. Families given as `Rendered` (a live worker's gauges) are
written that way without building a sample; the samples of every other family find their
cached lines by name and labels (`_Cache`), except where the encoder does more than write one
line per sample in order (timestamps, the text format's moving of `_created` samples): those
families are written by the encoder itself. An exemplar is appended to its sample's line by
prometheus-client's own function. The output is the encoder's, byte for byte
(tests/test_rendered.py).

Content negotiation is prometheus-client's (`choose_encoder`); the cached lines are the chosen
encoder's own, so they follow its escaping. An encoder this module does not know (a future
format) serves everything through prometheus-client. `?name[]=` keeps the families or samples
asked for, as namefilter.py does.
"""

from __future__ import annotations

import gzip
import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder, generate_latest, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString as _float_to_go_string

from pool_exporter.namefilter import Only

log = logging.getLogger("pool_exporter")

Encoder = Callable[[Any], bytes]
# How prometheus-client writes a value, in both formats (untyped there).
floatToGoString: Callable[[float], str] = _float_to_go_string
_EOF = "# EOF\n"
# Level 6 (zlib's default) compresses this exposition as small as gzip.compress's default
# level 9 does, in an eighth of the time (docs/sidecar.md, Benchmark).
GZIP_LEVEL = 6


class _Families:
    """Families as prometheus-client's encoders take them: something with collect()."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


_FORMATS: dict[tuple[Any, ...], int] = {}


class Format:
    """One encoder chosen by content negotiation, and what is rendered once for it."""

    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        func = getattr(encoder, "func", encoder)
        kwargs = getattr(encoder, "keywords", {})
        # A small int: cached lines are looked up by it for every sample of every scrape.
        self.key = _FORMATS.setdefault((func, tuple(sorted(kwargs.items()))), len(_FORMATS))
        self.openmetrics = func is openmetrics.generate_latest
        self.known = func is generate_latest or self.openmetrics

    def families(self, families: list[Metric]) -> str:
        """What the encoder writes for `families`, without OpenMetrics' end marker."""
        text = self.encoder(_Families(families)).decode("utf-8")
        if self.openmetrics and text.endswith(_EOF):
            text = text[: -len(_EOF)]
        return text

    def prefix(self, family: Metric) -> str:
        """The line of `family`'s one sample, as the encoder writes it, cut before its value."""
        # "\n" only: the encoder escapes nothing else, and a label value may hold any other
        # character str.splitlines() would break a line at.
        lines = [line for line in self.families([family]).split("\n") if line[:1] not in "#"]
        suffix = " " + floatToGoString(0.0)
        if len(lines) != 1 or not lines[0].endswith(suffix):
            raise _Uncut(f"cannot cut the sample line of {family.name}: {lines!r}")
        return lines[0][: -len(suffix) + 1]


# Most values of a pool's gauges are small counts, stored as ints: their text, once.
_SMALL = tuple(floatToGoString(float(n)) for n in range(4096))


def format_value(value: float) -> str:
    # An integral float too, but not -0.0 (which floatToGoString writes as "-0.0").
    whole = type(value) is int or (
        type(value) is float and value.is_integer() and math.copysign(1.0, value) > 0
    )
    if whole and 0 <= value < len(_SMALL):
        return _SMALL[int(value)]
    return floatToGoString(value)


class Labelled:
    """One sample's family, name and labels; its line up to the value, once per format."""

    __slots__ = ("_prefixes", "family", "labels", "name")

    def __init__(self, family: Metric, name: str, labels: dict[str, str]) -> None:
        self.family = family
        self.name = name
        self.labels = labels
        self._prefixes: dict[int, str] = {}

    def prefix(self, fmt: Format) -> str:
        found = self._prefixes.get(fmt.key)
        if found is None:
            probe = Metric(self.family.name, self.family.documentation, self.family.type)
            probe.add_sample(self.name, self.labels, 0.0)
            found = self._prefixes[fmt.key] = fmt.prefix(probe)
        return found


@dataclass
class Rendered:
    """A family whose samples are (Labelled, value) rows: `family` is its empty
    prometheus-client family (its HELP and TYPE lines are written by the encoder)."""

    family: Metric
    rows: list[tuple[Labelled, float]] = field(default_factory=list)

    def text(self, fmt: Format, header: str) -> str:
        """The family as `fmt` writes it; `header` is its HELP and TYPE lines."""
        lines = [header]
        # Labelled.prefix and format_value, inline: this runs for every row of every scrape.
        key, small, n = fmt.key, _SMALL, len(_SMALL)
        lines += [
            f"{s._prefixes.get(key) or s.prefix(fmt)}"
            f"{small[v] if type(v) is int and 0 <= v < n else format_value(v)}\n"
            for s, v in self.rows
        ]
        return "".join(lines)

    def as_family(self) -> Metric:
        """The same samples as a prometheus-client family (the way that renders nothing once)."""
        family = self.family
        out = Metric(family.name, family.documentation, family.type, family.unit)
        for sample, value in self.rows:
            out.add_sample(sample.name, dict(sample.labels), value)
        return out

    def keep(self, names: frozenset[str]) -> Rendered | None:
        """Only the rows asked for by family or sample name (`?name[]=`)."""
        if self.family.name in names:
            return self
        rows = [row for row in self.rows if row[0].name in names]
        return Rendered(self.family, rows) if rows else None


class _Cache:
    """Header and sample lines (cut before the value) of ordinary families, as one format
    writes them, by family and then by sample name and labels. An entry that no scrape wrote
    for _KEEP scrapes is dropped, so series that went away do not stay in memory."""

    def __init__(self) -> None:
        # (format, family name, type, help, unit) -> [header, {sample key: line}, last scrape]
        self.families: dict[tuple[Any, ...], list[Any]] = {}
        self.scrape = 0

    def start(self) -> None:
        self.scrape += 1
        if self.scrape % _KEEP == 0:
            kept = self.scrape - _KEEP
            self.families = {k: v for k, v in self.families.items() if v[2] > kept}

    def family(self, fmt: Format, family: Metric) -> list[Any]:
        empty = (family.name, family.documentation, family.type, family.unit)
        key = (fmt.key, *empty)
        entry = self.families.get(key)
        if entry is None or len(entry[1]) > _MAX_LINES:  # new, or the label sets churn
            entry = self.families[key] = [fmt.families([Metric(*empty)]), {}, 0]
        entry[2] = self.scrape
        return entry

    def header(self, fmt: Format, family: Metric) -> str:
        header: str = self.family(fmt, family)[0]
        return header

    def text(self, fmt: Format, family: Metric) -> str | None:
        """`family` as the encoder writes it; None where the encoder does more than one line
        per sample in order (timestamps, native histograms, and the text format's moving of
        OpenMetrics-only samples to families of their own). An exemplar is written after the
        value by prometheus-client's own function where it has one (the OpenMetrics format;
        the text format writes none: a sample's line is the same with one or without)."""
        openmetrics = fmt.openmetrics
        moved = () if openmetrics else {family.name + s for s in _OPENMETRICS_ONLY}
        header, lines, _ = self.family(fmt, family)
        out = [header]
        for s in family.samples:
            if s.timestamp is not None or s.native_histogram or s.name in moved:
                return None
            exemplar = ""
            if s.exemplar and openmetrics:
                if _compose_exemplar is None:
                    return None
                exemplar = _compose_exemplar(family, s, s.exemplar)
            key = (s.name, *s.labels.items())
            line = lines.get(key)
            if line is None:
                probe = Metric(family.name, family.documentation, family.type)
                probe.add_sample(s.name, s.labels, 0.0)
                line = lines[key] = fmt.prefix(probe)
            out.append(f"{line}{format_value(s.value)}{exemplar}\n")
        return "".join(out)


# How prometheus-client's OpenMetrics encoder writes an exemplar after a sample's value, the
# same function so the same bytes (tests/test_rendered.py); a release without it has the
# families with exemplars written by the encoder itself.
_compose_exemplar: Callable[[Metric, Any, Any], str] | None = getattr(
    openmetrics, "_compose_exemplar_string", None
)

# A family's lines are dropped after this many scrapes without it; a family with more label
# sets than this (labels that never repeat) starts again from none.
_KEEP = 16
_MAX_LINES = 100_000
_OPENMETRICS_ONLY = ("_created", "_gsum", "_gcount")


class Exposed:
    """The collectors one endpoint serves, in order; one with a `rendered()` method gives
    some of its families as `Rendered` there."""

    def __init__(self, *collectors: Any) -> None:
        self.collectors = collectors
        self.cache = _Cache()

    def collect(self) -> Iterator[Metric]:
        for family in self.rendered():
            yield family.as_family() if isinstance(family, Rendered) else family

    def rendered(self) -> Iterator[Metric | Rendered]:
        for c in self.collectors:
            yield from c.rendered() if hasattr(c, "rendered") else c.collect()


def encode(source: Exposed, encoder: Encoder, names: frozenset[str] | None = None) -> bytes:
    """What `encoder` writes for `source` (only `names`, when given), faster."""
    fmt = Format(encoder)
    if fmt.known:
        try:
            return _encode(source, fmt, names)
        except _Uncut as exc:  # a line this module cannot cut: prometheus-client's way, whole
            if not _warned.is_set():
                _warned.set()
                log.warning("serving the metrics without cached lines: %s", exc)
    return encoder(Only(source, names) if names is not None else source)


class _Uncut(ValueError):
    """The encoder wrote a sample's line in a shape this module does not know."""


_warned = threading.Event()  # the fallback is logged once


def _encode(source: Exposed, fmt: Format, names: frozenset[str] | None) -> bytes:
    cache = source.cache
    cache.start()
    out: list[str] = []
    for family in source.rendered():
        if isinstance(family, Rendered):
            kept = family.keep(names) if names is not None else family
            if kept is not None:
                out.append(kept.text(fmt, cache.header(fmt, kept.family)))
            continue
        for one in _only(family, names) if names is not None else (family,):
            text = cache.text(fmt, one)
            out.append(fmt.families([one]) if text is None else text)
    if fmt.openmetrics:
        out.append(_EOF)
    return "".join(out).encode("utf-8")


def _only(family: Metric, names: frozenset[str]) -> list[Metric]:
    return list(Only(_Families([family]), names).collect())


def make_rendering_wsgi_app(
    source: Exposed, disable_compression: bool = False
) -> Callable[..., Any]:
    """prometheus-client's WSGI metrics app (same methods, negotiation, gzip) over `source`,
    written by `encode` (not exposition.make_wsgi_app, the application's: a registry through
    prometheus-client's own app)."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        if method == "OPTIONS":
            start_response("200 OK", [("Allow", "OPTIONS,GET")])
            return [b""]
        if method != "GET":
            status = "405 Method Not Allowed"
            start_response(status, [("Allow", "OPTIONS,GET")])
            return [f"# HTTP {status}: {method}; use OPTIONS or GET\n".encode()]
        encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
        params = parse_qs(environ.get("QUERY_STRING", ""))
        names = frozenset(params["name[]"]) if "name[]" in params else None
        output = encode(source, encoder, names)
        headers = [("Content-Type", content_type)]
        if not disable_compression and gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING", "")):
            output = gzip.compress(output, compresslevel=GZIP_LEVEL)
            headers.append(("Content-Encoding", "gzip"))
        start_response("200 OK", headers)
        return [output]

    return app
