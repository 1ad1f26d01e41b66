"""Recent probes, for the landing page and each probe's log page.

Two rings: the last ``limit`` probes, and the last ``failure_limit`` failed ones, so that a
flood of successes cannot push out the failure an operator is looking for (the same rule as
blackbox_exporter's history). Adding is O(1): the record keeps a reference to the probe's
frozen result, and its log page is rendered only when someone asks for it. Memory is bounded
by the two ring sizes times :data:`MAX_CERTS_KEPT` certificates per record, and in bytes by
the history's share of ``--cache.max-bytes`` (:mod:`ssl_exporter.lru`): a flood of probes of
servers presenting huge certificates keeps fewer records, never more memory.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ssl_exporter import certs, lru
from ssl_exporter.result import ProbeResult

# Certificates a record keeps with their DER. A presented chain never has more (the TLS
# prober keeps 32); a Kubernetes cluster's Secrets may, and must not pin megabytes per record.
MAX_CERTS_KEPT = 32


@dataclass(frozen=True, slots=True)
class ProbeRecord:
    """One probe as the operator pages show it."""

    id: int
    time: float  # Unix time when the probe finished
    module: str
    target: str  # as the client gave it, a URL's password redacted
    server_name: str  # the verified name (SNI)
    module_config: Mapping[str, Any]  # redacted, shared with the config load it came from
    result: ProbeResult  # certificates beyond MAX_CERTS_KEPT dropped
    certs_dropped: int = 0

    @property
    def failed(self) -> bool:
        return not self.result.success


class History:
    """The recent-probes store; one per exporter, used from the event loop only."""

    def __init__(self, limit: int = 100, failure_limit: int = 100, max_bytes: int | None = None) -> None:
        if limit < 0 or failure_limit < 0:
            raise ValueError("history limits must not be negative")
        self.limit = limit
        self.failure_limit = failure_limit
        self._ids = itertools.count(1)
        # Keyed by id and never read through get(), so insertion order stays probe order:
        # each ring drops its oldest records first. Half the bytes each; a failure kept in both
        # is counted twice, which errs on the safe side.
        max_bytes = lru.share("history") if max_bytes is None else max_bytes
        self._recent: lru.ByteLRU[ProbeRecord] = lru.ByteLRU(max_bytes // 2, limit, "history")
        self._failures: lru.ByteLRU[ProbeRecord] = lru.ByteLRU(max_bytes // 2, failure_limit, "history")

    def add(self, module: str, target: str, server_name: str, module_config: Mapping[str, Any],
            result: ProbeResult) -> ProbeRecord:
        """Record a finished probe.

        Returns the record with the whole result, for the answer being sent now; its id
        names it in logs and links. What is kept may hold fewer certificates.
        """
        record = ProbeRecord(next(self._ids), time.time(), module, target, server_name, module_config, result)
        kept = record
        dropped = len(result.certs) - MAX_CERTS_KEPT
        if dropped > 0:  # rare (sources at rest only), so the copies are off the common path
            trimmed = dataclasses.replace(result, certs=result.certs[:MAX_CERTS_KEPT],
                                          positions=result.positions[:MAX_CERTS_KEPT])
            kept = dataclasses.replace(record, result=trimmed, certs_dropped=dropped)
        elif result.addresses:  # tcp.all_addresses: the same budget shared by the addresses
            trimmed, dropped = _trim_addresses(result)
            if dropped:
                kept = dataclasses.replace(record, result=trimmed, certs_dropped=dropped)
        size = record_size(kept)
        self._recent.put(kept.id, kept, size)
        if kept.failed:
            self._failures.put(kept.id, kept, size)  # the same object, in both rings
        return record

    def records(self) -> list[ProbeRecord]:
        """Every retained probe, newest first, each once."""
        merged = {record.id: record for record in itertools.chain(self._failures.values(), self._recent.values())}
        return [merged[probe_id] for probe_id in sorted(merged, reverse=True)]

    def get(self, probe_id: int) -> ProbeRecord | None:
        return self._recent.peek(probe_id) or self._failures.peek(probe_id)

    @property
    def bytes(self) -> int:
        """The estimated memory the records hold (a failure in both rings counted twice)."""
        return self._recent.bytes + self._failures.bytes


# The record, its result and their small fields, beyond the texts counted one by one.
_RECORD_OVERHEAD = 2048


def record_size(record: ProbeRecord) -> int:
    """An estimate of what one record keeps alive, for the history's byte bound."""
    result = record.result
    cert_bytes = sum(certs.size_of(cert) for cert in result.certs)
    cert_bytes += sum(certs.size_of(cert) for item in result.addresses or () for cert in item.result.certs)
    if result.client_cert is not None:
        cert_bytes += certs.size_of(result.client_cert)
    texts = lru.text_size(record.target, record.server_name, *result.log,
                          *(error.detail for error in result.errors),
                          *(error.detail for error in result.read_errors),
                          *(check.detail for check in result.revocation))
    return _RECORD_OVERHEAD + cert_bytes + texts


def _trim_addresses(result: ProbeResult) -> tuple[ProbeResult, int]:
    """Keep at most MAX_CERTS_KEPT certificates over all the addresses of a result, an equal
    share each and the leaf at least; return the trimmed result and how many were dropped."""
    addresses = result.addresses or ()
    share = max(1, MAX_CERTS_KEPT // max(1, len(addresses)))
    dropped = sum(max(0, len(a.result.certs) - share) for a in addresses)
    if not dropped:
        return result, 0
    trimmed = tuple(dataclasses.replace(a, result=dataclasses.replace(
        a.result, certs=a.result.certs[:share], positions=a.result.positions[:share])) for a in addresses)
    return dataclasses.replace(result, addresses=trimmed), dropped
