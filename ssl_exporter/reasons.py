"""The one registry of reasons: every ``reason`` label value the exporter can export.

Labels must come from finite, documented sets. Each set below is the reason label of one
family of series, documented where its family is; the modules that produce them keep a
named view of their own set (``errors.REASONS``, ``access.REASONS``,
``revocation.UNKNOWN_REASONS``, ``ari.REASONS``). A test reads every ``ProbeFailure``,
``fail`` and ``ProbeError`` in the package and checks its reason literal is here
(tests/test_reasons.py); tests/test_docs.py and tests/test_ari.py hold the docs to them.

To add a reason: put it in its set here with its meaning, and in the docs' table.
"""

from __future__ import annotations

from collections.abc import Mapping

# Why a probe failed: the ``reason`` label of ssl_probe_error_info, with a stage from
# errors.STAGES, and of ssl_source_error_info (docs/metrics.md).
PROBE: dict[str, str] = {
    # Network, any stage.
    "timeout": "the probe's deadline passed during this stage (at stage resolve: also tcp.dns_timeout)",
    "dns": "the name did not resolve (or not to an address of an allowed IP family)",
    # Resolution through configured DNS servers (tcp.dns_servers, --dns.server) says why.
    "nxdomain": "the DNS server says the name does not exist (NXDOMAIN)",
    "no_address": "the name exists but has no address of an allowed IP family",
    "servfail": "the DNS servers failed to answer (SERVFAIL)",
    "refused": "the port actively refused the connection (at stage resolve: the DNS server answered REFUSED)",
    "unreachable": "no route to the host or network",
    "reset": "the peer reset the connection",
    "closed": "the peer closed the connection before the stage completed",
    "network_error": "another socket error (see the log line for errno)",
    "proxy_error": "the proxy refused or failed the CONNECT request",
    "oversized": "the peer sent more than the exporter reads in this stage",
    # STARTTLS dialogue.
    "starttls_unsupported": "the server does not offer STARTTLS",
    "starttls_refused": "the server refused the STARTTLS command",
    "starttls_protocol": "unexpected or malformed reply in the STARTTLS dialogue",
    # TLS handshake.
    "tls_protocol": "the peer does not speak TLS (garbage, plain HTTP, bad record)",
    "protocol_version": "no TLS version acceptable to both sides",
    "handshake_failure": "the peer aborted the handshake with an alert",
    "tls_error": "another TLS error the exporter does not classify (OpenSSL's words are in the log line)",
    # Certificate verification.
    "expired": "a certificate on the path is past its not-after",
    "not_yet_valid": "a certificate on the path is before its not-before",
    "unknown_issuer": "the chain leads to a CA that is not in the trust store",
    "self_signed": "the leaf is self-signed and not trusted",
    "incomplete_chain": "the server did not send the intermediate that issued its leaf",
    "hostname_mismatch": "the leaf does not match the verified name",
    "weak_crypto": "a key, DH group or signature below OpenSSL's security level (in the handshake or on the chain)",
    "invalid_purpose": "a certificate is not allowed for TLS server authentication",
    "bad_certificate": "a certificate is malformed or its signature does not verify",
    "revoked": "a certificate on the path is revoked (OCSP, CRL or a stapled OCSP response)",
    # Reading certificates at rest.
    "not_found": "no such file, or nothing matched (rdap: the registry answered 404 for the domain)",
    "permission_denied": "the file could not be read for lack of permission",
    "bad_pem": "a PEM block could not be decoded",
    "bad_der": "DER data could not be decoded",
    "bad_pkcs12": "a PKCS#12 file could not be decoded",
    "bad_password": "the PKCS#12 password is wrong or missing",
    "excessive_iterations": "a PKCS#12 file asks for more key-derivation or MAC iterations than allowed",
    "no_certificate": "the source holds no certificate",
    "bad_kubeconfig": "the kubeconfig is not a YAML mapping, or nests too deep or grows too large by its aliases",
    "api_error": "the Kubernetes API answered with an error other than 401/403, or not with a list",
    "bad_token": "the Kubernetes token file holds what cannot be a bearer token (a control character)",
    "internal_error": "a bug in the exporter; the log has the traceback",
    # Domain registration lookups (stage rdap, docs/domains.md).
    "no_rdap_service": "no RDAP server for the domain's TLD in the bootstrap registry or rdap.servers",
    "bootstrap_unavailable": "the bootstrap registry could not be fetched from rdap.bootstrap_url "
    "and no rdap.bootstrap_file is configured",
    "rate_limited": "the RDAP server answered 429, or its Retry-After has not passed yet",
    "http_error": "the RDAP server answered with an HTTP status other than 200, 3xx, 404 or 429",
    "bad_response": "the answer is not JSON, not an RDAP domain object, names another domain, "
    "or has an unreadable date",
    "too_many_redirects": "more redirects than rdap.max_redirects, or a redirect loop",
    "insecure_url": "an RDAP URL (bootstrap, redirect or referral) is not https:// and rdap.allow_http is off",
    "refused_by_policy": "an RDAP server's host or address is refused by the module's target_policy",
}

# Why a probe was refused before any connection: the ``reason`` label of
# ssl_exporter_probes_refused_total (target_policy, docs/security.md).
REFUSED: dict[str, str] = {
    "host_denied": "the target's name matches deny_hosts",
    "host_not_allowed": "allow_hosts is set and the target's name (or IP-address target) matches none of it",
    "address_denied": "an address of the target is in deny_cidrs",
    "address_not_allowed": "allow_cidrs is set and an address of the target is outside it",
    "link_local": "an address of the target is link-local or a cloud metadata address (deny_link_local)",
    "unspecified_address": "an address of the target is unspecified (0.0.0.0/8 or ::, in any form), which "
                           "connects to the local host; refused under any policy",
}

# Why a revocation status is unknown: the ``reason`` label of ssl_revocation_status_info
# (docs/revocation.md).
REVOCATION: dict[str, str] = {
    "no_responder": "the certificate names no http:// OCSP responder or CRL distribution point, "
    "and no configured CRL file is from its issuer",
    "no_issuer": "the certificate's issuer is not known (not on the verified path nor presented), "
    "so no answer can be checked",
    "unverified_chain": "the chain did not verify, so the certificate's OCSP responder and CRL "
    "distribution points are not trusted enough to be fetched",
    "refused_by_policy": "the OCSP responder's or CRL distribution point's host is refused by the "
    "module's target_policy",
    "not_stapled": "stapling was requested but the server sent no OCSP response",
    "fetch_failed": "the responder or CRL server could not be reached, answered with an HTTP error, "
    "or sent more than the exporter reads",
    "timeout": "the probe's deadline came before the answer",
    "bad_response": "the answer is not a well-formed OCSP response or CRL, or the responder "
    "answered with an error status (malformedRequest, tryLater, unauthorized, ...)",
    "bad_signature": "the answer's signature does not verify with the issuer's key or with an "
    "authorized delegated responder's",
    "stale": "the answer is past its nextUpdate, or its thisUpdate is in the future",
    "no_match": "the answer does not cover this certificate (issuer or serial differ)",
    "responder_unknown": "the OCSP responder answered that it does not know the certificate",
    "internal_error": "a bug in the exporter; the log has the traceback",
}

# Why an ARI renewal window is unknown: the ``reason`` label of ssl_cert_ari_status_info
# (docs/metrics.md).
ARI: dict[str, str] = {
    "no_ca": "no built-in or configured ACME CA matches the certificate's issuer",
    "no_key_id": "the certificate has no authority key identifier, so no ARI certificate ID can be built",
    "refused_by_policy": "the ACME server's host is refused by the module's target_policy",
    "no_renewal_info": "the CA's ACME directory names no renewalInfo URL (the CA does not offer ARI)",
    "not_found": "the CA answered 404: it does not know the certificate",
    "fetch_failed": "the ACME server could not be reached, answered with another HTTP error, "
    "or sent more than the exporter reads",
    "timeout": "the probe's deadline came before the answer",
    "bad_response": "the directory or the renewalInfo answer is not the JSON RFC 9773 describes, "
    "or its window ends before it starts",
    "internal_error": "a bug in the exporter; the log has the traceback",
}

# Each set by the series whose reason label it is.
REGISTRY: Mapping[str, Mapping[str, str]] = {
    "ssl_probe_error_info": PROBE,  # and ssl_source_error_info
    "ssl_exporter_probes_refused_total": REFUSED,
    "ssl_revocation_status_info": REVOCATION,
    "ssl_cert_ari_status_info": ARI,
}

ALL: frozenset[str] = frozenset().union(*REGISTRY.values())
