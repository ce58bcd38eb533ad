"""The sample lines of chosen metrics in a Prometheus text exposition, found without parsing
the rest (an engine's page runs to hundreds of histogram lines), then parsed with
prometheus-client's parser."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["samples"]


def _lines(text: str, names: Sequence[str]) -> Iterator[str]:
    for name in names:
        start = 0
        while (at := text.find(name, start)) != -1:
            start = at + len(name)
            if (at == 0 or text[at - 1] == "\n") and text[start : start + 1] in ("{", " ", "\t"):
                end = text.find("\n", start)
                yield text[at : len(text) if end == -1 else end]


def samples(text: str, names: Sequence[str]) -> Iterator[tuple[str, dict[str, str], float]]:
    """``(name, labels, value)`` of every sample of ``names`` in ``text`` (``ValueError`` if
    one of their lines does not parse)."""
    found = "\n".join(_lines(text, names))
    for family in text_string_to_metric_families(found + "\n"):
        for sample in family.samples:
            yield sample.name, sample.labels, float(sample.value)
