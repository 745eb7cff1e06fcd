#!/usr/bin/env python3
"""Checks the Helm chart with real Helm (PyPI helm-python-sdk) and Kubernetes schemas (PyPI
kubernetes-validate --strict): lint without warnings, render for 1, 3 and 10 replicas with Jaeger
on and off, validate every object, and check what the nodes are told (names, seeds, probes,
security). Run by .ci/run inside a virtualenv."""
import sys

import helm_python
import kubernetes_validate
import yaml
from helm_python import Chart

CHART = "k8s/helm/gpu-telemetry"
NAME, NS = "telemetry", "gpu"
FULL = "telemetry-gpu-telemetry"
CRD_KINDS = {"ServiceMonitor"}  # no upstream schema: checked by hand below


def render(values):
    out = Chart.load(CHART).render(values, name=NAME, namespace=NS)
    objs = []
    for path, text in out.items():
        if path.endswith("NOTES.txt"):
            continue
        objs += [o for o in yaml.safe_load_all(text) if o]
    return objs


def env_of(sts):
    c = sts["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e for e in c["env"]}, c


def seeds(n):
    return ",".join(
        f"{FULL}-{i}.{FULL}-headless.{NS}.svc.cluster.local:4697" for i in range(min(n, 3))
    )


def main():
    lint = helm_python.lint(CHART)
    bad = [m for m in lint["messages"] if m["severity"] >= 2] + list(lint["errors"] or [])
    assert not bad, f"helm lint: {bad}"
    version = kubernetes_validate.latest_version()
    checked = 0
    for replicas in (1, 3, 10):
        for jaeger in (True, False):
            objs = render({"replicas": replicas, "jaeger": {"enabled": jaeger}})
            kinds = sorted(o["kind"] for o in objs)
            for o in objs:
                kubernetes_validate.validate(o, version, strict=True)
                checked += 1
            sts = next(o for o in objs if o["kind"] == "StatefulSet")
            env, c = env_of(sts)
            assert sts["spec"]["replicas"] == replicas
            assert sts["spec"]["serviceName"] == f"{FULL}-headless"
            assert env["TELEMETRY_SEEDS"]["value"] == seeds(replicas), env["TELEMETRY_SEEDS"]
            # Two copies by default once there are two pods to hold them.
            assert env["TELEMETRY_REPLICATION_FACTOR"]["value"] == ("1" if replicas == 1 else "2")
            assert "TELEMETRY_WRITE_QUORUM" not in env
            assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            assert env["TELEMETRY_NODE_NAME"]["value"] == "$(POD_NAME)"
            assert env["TELEMETRY_ADVERTISE_ADDR"]["value"] == (
                f"$(POD_NAME).{FULL}-headless.{NS}.svc.cluster.local:4697")
            assert env["TELEMETRY_CLUSTER_COOKIE"]["valueFrom"]["secretKeyRef"]["key"] == "cluster-cookie"
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
            assert sts["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"]
            assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 90
            headless = next(o for o in objs if o["kind"] == "Service" and o["metadata"]["name"].endswith("-headless"))
            assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"]
            assert ("OTEL_EXPORTER_OTLP_ENDPOINT" in env) == jaeger
            assert ("Deployment" in kinds) == jaeger
            for k in ("PodDisruptionBudget", "Secret", "ConfigMap"):
                assert k in kinds, (k, kinds)
            print(f"replicas={replicas:>2} jaeger={jaeger!s:5}: {len(objs)} objects valid ({', '.join(kinds)})")
    # The 3-replica seed list, spelled out as the StatefulSet's DNS gives it.
    env, _ = env_of(next(o for o in render({"replicas": 3}) if o["kind"] == "StatefulSet"))
    assert env["TELEMETRY_SEEDS"]["value"] == (
        "telemetry-gpu-telemetry-0.telemetry-gpu-telemetry-headless.gpu.svc.cluster.local:4697,"
        "telemetry-gpu-telemetry-1.telemetry-gpu-telemetry-headless.gpu.svc.cluster.local:4697,"
        "telemetry-gpu-telemetry-2.telemetry-gpu-telemetry-headless.gpu.svc.cluster.local:4697")
    # Inline CSV, existing Secret, ServiceMonitor, no streaming.
    objs = render({"stream": {"data": {"dcgm.csv": "timestamp,metric_name\n"}}, "existingSecret": "mine",
                   "serviceMonitor": {"enabled": True}, "jaeger": {"enabled": False},
                   "cluster": {"tlsSecret": "node-certs"}})
    sts = next(o for o in objs if o["kind"] == "StatefulSet")
    env, c = env_of(sts)
    assert env["TELEMETRY_CSV"]["value"] == "/csv/dcgm.csv"
    assert env["TELEMETRY_CLUSTER_COOKIE"]["valueFrom"]["secretKeyRef"]["name"] == "mine"
    assert not any(o["kind"] == "Secret" for o in objs)
    assert env["TELEMETRY_CLUSTER_TLS_CA"]["value"] == "/tls/ca.crt"
    vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
    assert vols["tls"]["secret"]["secretName"] == "node-certs" and "csv" in vols
    sm = next(o for o in objs if o["kind"] == "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["path"] == "/metrics"
    for o in objs:
        if o["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(o, version, strict=True)
    env, _ = env_of(next(o for o in render({"replicas": 5, "replicationFactor": 3, "writeQuorum": 2})
                         if o["kind"] == "StatefulSet"))
    assert env["TELEMETRY_REPLICATION_FACTOR"]["value"] == "3"
    assert env["TELEMETRY_WRITE_QUORUM"]["value"] == "2"
    objs = render({"stream": {"enabled": False}})
    env, _ = env_of(next(o for o in objs if o["kind"] == "StatefulSet"))
    assert env["TELEMETRY_NO_STREAM"]["value"] == "true" and "TELEMETRY_RATE" not in env
    # values.schema.json refuses nonsense.
    for bad_values in ({"replicas": 0}, {"replicas": "three"}, {"logFormat": "xml"}, {"typo": 1},
                       {"replicationFactor": 0}, {"replicationFactor": "two"}):
        try:
            render(bad_values)
        except helm_python.HelmError:
            continue
        sys.exit(f"values {bad_values} were accepted")
    print(f"chart ok: {checked} objects validated against Kubernetes {version} (strict); lint clean")


if __name__ == "__main__":
    main()
