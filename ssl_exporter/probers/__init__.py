"""Probers: one module per source, registered by the name used in a module's ``prober:``."""

from ssl_exporter.probers import file, kube, rdap, tcp
from ssl_exporter.probers.base import Prober

PROBERS: dict[str, Prober] = {
    "tcp": tcp.PROBER,
    "file": file.PROBER,
    "kubeconfig": kube.KUBECONFIG_PROBER,
    "kubernetes": kube.KUBERNETES_PROBER,
    "rdap": rdap.PROBER,
}
