"""A metrics endpoint that renders each label set once: prometheus-client's exposition, cached.

prometheus-client's text and OpenMetrics exposition validate, escape and format every label
of every sample at every scrape; on a host of 64 workers x 10 pools that is most of a
scrape. A label set of a live worker's pool never changes, so a `Labelled` keeps its sample
line up to the value, as prometheus-client's own encoder wrote it (rendered once per format
with a value of 0 and cut before it), and a scrape only formats the value with
prometheus-client's floatToGoString. Families given as `Rendered` (a live worker's gauges) are
written that way without building a sample; the samples of every other family find their
cached lines by name and labels (`_Cache`), except where the encoder does more than write one
line per sample in order (timestamps, exemplars, the text format's moving of `_created`
samples): those families are written by the encoder itself. The output is the encoder's, byte
for byte (tests/test_rendered.py).

Content negotiation is prometheus-client's (`choose_encoder`); the cached lines are the chosen
encoder's own, so they follow its escaping. An encoder this module does not know (a future
format) serves everything through prometheus-client. `?name[]=` keeps the families or samples
asked for, as namefilter.py does.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from prometheus_client.exposition import choose_encoder, generate_latest, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.utils import floatToGoString as _float_to_go_string

from pool_exporter.namefilter import Only

Encoder = Callable[[Any], bytes]
# How prometheus-client writes a value, in both formats (untyped there).
floatToGoString: Callable[[float], str] = _float_to_go_string
_EOF = "# EOF\n"
# Level 6 (zlib's default, and Go's promhttp's) compresses this exposition as small as
# gzip.compress's level 9 does, in an eighth of the time (docs/sidecar.md, Benchmark).
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
        lines = [line for line in self.families([family]).splitlines() if line[:1] != "#"]
        suffix = " " + floatToGoString(0.0)
        if len(lines) != 1 or not lines[0].endswith(suffix):
            raise ValueError(f"cannot cache the sample line of {family.name}: {lines!r}")
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

    def text(self, fmt: Format) -> str:
        lines = [fmt.families([self.family])]
        lines += [f"{sample.prefix(fmt)}{format_value(value)}\n" for sample, value in self.rows]
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
    writes them. An entry is kept while scrapes still write it: each scrape keeps what it used
    and what is new, so series that went away do not stay in memory."""

    def __init__(self) -> None:
        self.now: dict[tuple[Any, ...], str] = {}
        self.before: dict[tuple[Any, ...], str] = {}

    def start(self) -> None:
        self.before, self.now = self.now, {}

    def header(self, fmt: Format, family: Metric) -> str:
        empty = (family.name, family.documentation, family.type, family.unit)
        key = (fmt.key, *empty)
        found = self.now.get(key) or self.before.get(key)
        if found is None:
            found = fmt.families([Metric(*empty)])
        self.now[key] = found
        return found

    def prefix(self, fmt: Format, family: Metric, name: str, labels: dict[str, str]) -> str:
        key = (fmt.key, family.name, family.type, name, *labels.items())
        found = self.now.get(key) or self.before.get(key)
        if found is None:
            probe = Metric(family.name, family.documentation, family.type)
            probe.add_sample(name, labels, 0.0)
            found = fmt.prefix(probe)
        self.now[key] = found
        return found

    def text(self, fmt: Format, family: Metric) -> str | None:
        """`family` as the encoder writes it; None where the encoder does more than one line
        per sample in order (timestamps, exemplars, native histograms, and the text format's
        moving of OpenMetrics-only samples to families of their own)."""
        moved = () if fmt.openmetrics else {family.name + s for s in _OPENMETRICS_ONLY}
        lines = [self.header(fmt, family)]
        for s in family.samples:
            if s.timestamp is not None or s.exemplar or s.native_histogram or s.name in moved:
                return None
            lines.append(f"{self.prefix(fmt, family, s.name, s.labels)}{format_value(s.value)}\n")
        return "".join(lines)


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
    if not fmt.known:
        return encoder(Only(source, names) if names is not None else source)
    cache = source.cache
    cache.start()
    out: list[str] = []
    for family in source.rendered():
        if isinstance(family, Rendered):
            kept = family.keep(names) if names is not None else family
            if kept is not None:
                out.append(kept.text(fmt))
            continue
        for one in _only(family, names) if names is not None else (family,):
            text = cache.text(fmt, one)
            out.append(fmt.families([one]) if text is None else text)
    if fmt.openmetrics:
        out.append(_EOF)
    return "".join(out).encode("utf-8")


def _only(family: Metric, names: frozenset[str]) -> list[Metric]:
    return list(Only(_Families([family]), names).collect())


def make_wsgi_app(source: Exposed, disable_compression: bool = False) -> Callable[..., Any]:
    """prometheus-client's WSGI metrics app (same methods, negotiation, gzip), over `encode`."""

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
