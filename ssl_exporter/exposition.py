"""A small, fast encoder for probe answers: gauge families in the Prometheus text format
or OpenMetrics.

prometheus_client's encoders validate every name and label again for each sample and build
a Sample tuple per line; for a probe answer that is a tenth of the probe's CPU, and for a
file scrape of 10,000 certificates most of the scrape. Here a sample is rendered to its
line once, when it is added, and a line can be cached and reused as it is (the certificate
series of an unchanged file). Both formats share the sample lines; they differ only in
escaping HELP text and the closing ``# EOF``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache

from prometheus_client import utils as _prometheus_utils
from prometheus_client.exposition import choose_encoder

_LABEL_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", '"': '\\"'})
_TEXT_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n"})
_OPENMETRICS_HELP_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", '"': '\\"'})
OPENMETRICS = "application/openmetrics-text"
# Characters a label value or HELP text may need escaped; most hold none, and looking for
# them is far cheaper than str.translate with a mapping (a Python call per character).
_LABEL_SPECIALS = ("\\", "\n", '"')

# prometheus_client leaves floatToGoString unannotated; this is the signature it has.
floatToGoString: Callable[[float], str] = _prometheus_utils.floatToGoString


class GaugeFamily:
    """One gauge metric family: its name, help, label names and rendered sample lines."""

    __slots__ = ("name", "documentation", "labels", "lines")

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)
        self.lines: list[str] = []

    def add(self, values: Sequence[str], value: float) -> None:
        self.lines.append(sample_line(self.name, self.labels, values, value))

    def __len__(self) -> int:
        return len(self.lines)


class LateGauge(GaugeFamily):
    """A gauge without labels whose value is asked for when the encoder reaches it (a
    duration that must include rendering the families before it)."""

    __slots__ = ("value",)

    def __init__(self, name: str, documentation: str, value: Callable[[], float]) -> None:
        super().__init__(name, documentation)
        self.value = value

    @property
    def lines(self) -> list[str]:
        return [sample_line(self.name, (), (), self.value())]

    @lines.setter
    def lines(self, _lines: list[str]) -> None:
        pass  # set by GaugeFamily.__init__; the line is rendered on demand

    def __len__(self) -> int:
        return 1


def gauge(name: str, documentation: str, value: float) -> GaugeFamily:
    family = GaugeFamily(name, documentation)
    family.add((), value)
    return family


def sample_line(name: str, labels: Sequence[str], values: Sequence[str], value: float) -> str:
    if not labels:
        return f"{name} {_go_float(value)}\n"
    pairs = ",".join(f'{label}="{_escape(text)}"' for label, text in zip(labels, values, strict=True))
    return f"{name}{{{pairs}}} {_go_float(value)}\n"


def _escape(text: str) -> str:
    """A label value escaped as the exposition formats want it."""
    for special in _LABEL_SPECIALS:
        if special in text:
            return text.translate(_LABEL_ESCAPES)
    return text


def _go_float(value: float) -> str:
    """prometheus_client's floatToGoString, without its call for the value of most series."""
    return "1.0" if value == 1.0 else floatToGoString(value)


def with_label(line: str, name: str, label: str, value: str) -> str:
    """A rendered sample line of metric ``name`` with one more label, put first."""
    pair = f'{label}="{_escape(value)}"'
    rest = line[len(name):]
    if rest.startswith("{"):
        return f"{name}{{{pair},{rest[1:]}"
    return f"{name}{{{pair}}}{rest}"


def encode(families: Iterable[GaugeFamily], accept_header: str | None) -> tuple[bytes, str]:
    """The text format, or OpenMetrics when the Accept header asks for it."""
    accept = accept_header or ""
    # Only short headers are remembered: a client's 8 KiB header must not stay in memory.
    content_type = _content_type(accept) if len(accept) <= 256 else choose_encoder(accept)[1]
    openmetrics = content_type.startswith(OPENMETRICS)
    out: list[str] = []
    for family in families:
        out.append(_header(family.name, family.documentation, openmetrics))
        out.extend(family.lines)
    if openmetrics:
        out.append("# EOF\n")
    return "".join(out).encode("utf-8"), content_type


@lru_cache(maxsize=64)  # a scraper sends the same Accept header every time
def _content_type(accept_header: str) -> str:
    return choose_encoder(accept_header)[1]


@lru_cache(maxsize=512)  # names and help texts are the code's constants: a few dozen
def _header(name: str, documentation: str, openmetrics: bool) -> str:
    escapes = _OPENMETRICS_HELP_ESCAPES if openmetrics else _TEXT_HELP_ESCAPES
    return f"# HELP {name} {documentation.translate(escapes)}\n# TYPE {name} gauge\n"
