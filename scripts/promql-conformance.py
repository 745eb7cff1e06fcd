"""PromQL conformance against the real thing.

Backfills a gen-csv file into a real Prometheus (Debian's 2.42: promtool tsdb
create-blocks-from openmetrics), streams the same file into a node (--timestamps csv), and checks
that /prometheus/api/v1/{query_range,query,series,labels} answer as Prometheus does for a set of
selectors and aggregations: same series, same values at the same steps, same lookback at the
edges. Usage: python3 promql-conformance.py NODE_BINARY WORKDIR
"""
import csv
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

binary, work = sys.argv[1], sys.argv[2]
subprocess.run([binary, "gen-csv", "--hosts", "2", "--scrapes", "600", "-o", f"{work}/in.csv"],
               check=True, stderr=subprocess.DEVNULL)

# OpenMetrics for promtool: one family per metric, each series' samples in time order.
families = {}
with open(f"{work}/in.csv") as f:
    for r in csv.DictReader(f):
        labels = {"UUID": r["uuid"], "gpu": r["gpu_id"], "device": r["device"],
                  "modelName": r["modelName"], "Hostname": r["Hostname"]}
        t = time.mktime(time.strptime(r["timestamp"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        families.setdefault(r["metric_name"], []).append((labels, t, r["value"]))
first = min(t for s in families.values() for _, t, _ in s)
last = max(t for s in families.values() for _, t, _ in s)
with open(f"{work}/in.om", "w") as out:
    for name, samples in families.items():
        out.write(f"# TYPE {name} gauge\n")
        samples.sort(key=lambda s: (sorted(s[0].items()), s[1]))
        for labels, t, v in samples:
            ls = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            out.write(f"{name}{{{ls}}} {v} {int(t)}\n")
    out.write("# EOF\n")
subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", f"{work}/in.om", f"{work}/prom"],
               check=True, stdout=subprocess.DEVNULL)


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


prom_port = port()
with open(f"{work}/prom.yml", "w") as f:
    f.write("global:\n  scrape_interval: 1h\n")
prom = subprocess.Popen(["prometheus", f"--config.file={work}/prom.yml", f"--storage.tsdb.path={work}/prom",
                         "--storage.tsdb.retention.time=100y", f"--web.listen-address=127.0.0.1:{prom_port}"],
                        stdout=subprocess.DEVNULL, stderr=open(f"{work}/prom.log", "w"))
node = subprocess.Popen([binary, "--data-dir", f"{work}/node", "--http-addr", "127.0.0.1:0", "--csv", f"{work}/in.csv",
                         "--rate", "0", "--passes", "1", "--timestamps", "csv"],
                        stdout=subprocess.PIPE, stderr=open(f"{work}/node.log", "w"), text=True)
try:
    node_url = node.stdout.readline().strip().removeprefix("listening on ")
    prom_url = f"http://127.0.0.1:{prom_port}"

    def get(base, path, **params):
        q = urllib.parse.urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{base}{path}?{q}", timeout=30) as r:
            return json.load(r)

    rows = sum(len(s) for s in families.values())
    for _ in range(600):
        try:
            if get(node_url, "/api/v1/cluster")["samples_stored"] == rows and \
                    get(prom_url, "/api/v1/query", query="count(DCGM_FI_DEV_GPU_TEMP)", time=last)["data"]["result"]:
                break
        except OSError:
            pass
        time.sleep(0.2)

    def canon(result):
        return sorted(result, key=lambda s: json.dumps(s["metric"], sort_keys=True))

    def diff(a, b):
        """The first difference between two results, readably."""
        ka = {json.dumps(s["metric"], sort_keys=True): s for s in a}
        kb = {json.dumps(s["metric"], sort_keys=True): s for s in b}
        only_a, only_b = sorted(set(ka) - set(kb)), sorted(set(kb) - set(ka))
        if only_a or only_b:
            return f"series only at the node: {only_a[:3]}; only in Prometheus: {only_b[:3]}"
        for k in sorted(ka):
            va, vb = ka[k].get("values", ka[k].get("value")), kb[k].get("values", kb[k].get("value"))
            if va != vb:
                return f"{k}:\nnode {va}\nprom {vb}"
        return "no difference found"

    queries = [
        "DCGM_FI_DEV_GPU_TEMP",
        'DCGM_FI_DEV_POWER_USAGE{gpu="3"}',
        'DCGM_FI_DEV_GPU_UTIL{Hostname=~"gen-dgx-h100-00[01]",gpu!="0"}',
        '{__name__=~"DCGM_FI_DEV_(GPU_TEMP|SM_CLOCK)",gpu=~"1|2"}',
        "avg by (Hostname) (DCGM_FI_DEV_GPU_TEMP)",
        "max by (Hostname, gpu) (DCGM_FI_DEV_POWER_USAGE)",
        "min(DCGM_FI_DEV_FB_USED)",
        "sum by (modelName) (DCGM_FI_DEV_GPU_UTIL)",
        "count without (UUID, device, gpu) (DCGM_FI_DEV_MEM_CLOCK)",
    ]
    # Windows: inside the data, and across its start and end (the 5-minute lookback).
    windows = [(first + 60, first + 300, "7"), (first - 120, first + 90, "15"), (last - 60, last + 400, "20")]
    checked = 0
    for q in queries:
        for start, end, step in windows:
            a = get(node_url, "/prometheus/api/v1/query_range", query=q, start=start, end=end, step=step)
            b = get(prom_url, "/api/v1/query_range", query=q, start=start, end=end, step=step)
            assert a["status"] == "success", a
            if canon(a["data"]["result"]) != canon(b["data"]["result"]):
                sys.exit(f"query_range differs for {q} [{start}, {end}] step {step}: {diff(a['data']['result'], b['data']['result'])}")
            checked += 1
        a = get(node_url, "/prometheus/api/v1/query", query=q, time=last + 100)
        b = get(prom_url, "/api/v1/query", query=q, time=last + 100)
        if canon(a["data"]["result"]) != canon(b["data"]["result"]):
            sys.exit(f"query differs for {q}: {diff(a['data']['result'], b['data']['result'])}")
        checked += 1
    for m in ['DCGM_FI_DEV_GPU_TEMP{gpu="2"}', '{__name__=~"DCGM_FI_DEV_.*_CLOCK"}']:
        a = get(node_url, "/prometheus/api/v1/series", **{"match[]": m})
        b = get(prom_url, "/api/v1/series", **{"match[]": m, "start": first, "end": last})
        if sorted(map(json.dumps, a["data"])) != sorted(map(lambda s: json.dumps(s, sort_keys=True), b["data"])):
            sys.exit(f"series differ for {m}:\nnode {a}\nprom {b}")
        checked += 1
    a = get(node_url, "/prometheus/api/v1/label/Hostname/values")
    b = get(prom_url, "/api/v1/label/Hostname/values")
    assert a["data"] == b["data"], (a, b)
    names = set(get(prom_url, "/api/v1/labels")["data"])
    assert names <= set(get(node_url, "/prometheus/api/v1/labels")["data"]), names
    print(f"promql: {checked} answers identical to Prometheus {get(prom_url, '/api/v1/status/buildinfo')['data']['version']}")
finally:
    node.terminate()
    prom.terminate()
    node.wait()
    prom.wait()
