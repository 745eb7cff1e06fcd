"""PromQL conformance against the real thing.

Backfills a gen-csv file into a real Prometheus (Debian's 2.42: promtool tsdb
create-blocks-from openmetrics), streams the same file into a node (--timestamps csv), and checks
that /prometheus/api/v1/{query_range,query,series,labels} answer as Prometheus does for a set of
selectors and aggregations: same series, same values at the same steps, same lookback at the
edges. Usage: python3 promql-conformance.py NODE_BINARY WORKDIR
"""
import csv
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

binary, work = sys.argv[1], sys.argv[2]
subprocess.run([binary, "gen-csv", "--hosts", "2", "--scrapes", "600", "-o", f"{work}/in.csv"],
               check=True, stderr=subprocess.DEVNULL)

# A DCGM counter on top of the generated gauges: each GPU's energy in mJ, the running sum of its
# power draw, and one GPU whose counter resets half-way (a driver reload), for rate & co.
with open(f"{work}/in.csv") as f:
    rows = list(csv.DictReader(f))
energy, counter_rows = {}, []
for r in rows:
    if r["metric_name"] != "DCGM_FI_DEV_POWER_USAGE":
        continue
    key = r["uuid"]
    total = energy.get(key, 0.0) + float(r["value"]) * 1000.0
    energy[key] = total
    counter_rows.append(dict(r, metric_name="DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", value=f"{total:.0f}"))
resets = [c for c in counter_rows if c["gpu_id"] == "3" and c["Hostname"].endswith("000")]
for c in resets[len(resets) // 2:]:
    c["value"] = str(int(c["value"]) - int(resets[len(resets) // 2]["value"]))
with open(f"{work}/in.csv", "a", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()), quoting=csv.QUOTE_ALL)
    w.writerows(counter_rows)

# OpenMetrics for promtool: one family per metric, each series' samples in time order.
families = {}
with open(f"{work}/in.csv") as f:
    for r in csv.DictReader(f):
        labels = {"UUID": r["uuid"], "gpu": r["gpu_id"], "device": r["device"],
                  "modelName": r["modelName"], "Hostname": r["Hostname"]}
        # The target labels a Prometheus scrape adds, as the exporter's dump records them.
        for k in ("instance", "job", "DCGM_FI_DRIVER_VERSION", "pci_bus_id"):
            m = re.search(rf'(?:^|,){k}="([^"]*)"', r.get("labels_raw", ""))
            if m and m.group(1):
                labels[k] = m.group(1)
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

    def close(a, b):
        """Two sample values (strings) equal within float tolerance (sums may add in another order)."""
        if a == b:
            return True
        try:
            x, y = float(a), float(b)
        except ValueError:
            return False
        return abs(x - y) <= 1e-9 * max(1.0, abs(x), abs(y))

    def same(a, b):
        """Two results (vector, matrix, scalar or string) equal within float tolerance."""
        if isinstance(a, list) and a and isinstance(a[0], dict):
            if len(a) != len(b):
                return False
            for x, y in zip(canon(a), canon(b)):
                if x["metric"] != y["metric"]:
                    return False
                vx, vy = x.get("values", [x.get("value")]), y.get("values", [y.get("value")])
                if len(vx) != len(vy) or any(p[0] != q[0] or not close(p[1], q[1]) for p, q in zip(vx, vy)):
                    return False
            return True
        if isinstance(a, list) and len(a) == 2 and not isinstance(a[0], dict):
            return a[0] == b[0] and close(a[1], b[1])
        return a == b

    def diff(a, b):
        """The first difference between two results, readably."""
        if not (isinstance(a, list) and all(isinstance(x, dict) for x in a + b)):
            return f"node {str(a)[:500]}\nprom {str(b)[:500]}"
        ka = {json.dumps(s["metric"], sort_keys=True): s for s in a}
        kb = {json.dumps(s["metric"], sort_keys=True): s for s in b}
        only_a, only_b = sorted(set(ka) - set(kb)), sorted(set(kb) - set(ka))
        if only_a or only_b:
            return f"series only at the node: {only_a[:3]}; only in Prometheus: {only_b[:3]}"
        for k in sorted(ka):
            va, vb = ka[k].get("values", ka[k].get("value")), kb[k].get("values", kb[k].get("value"))
            if not same([ka[k]], [kb[k]]):
                return f"{k}:\nnode {va}\nprom {vb}"
        return "no difference found"

    E = "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
    queries = [
        # selectors, offsets
        "DCGM_FI_DEV_GPU_TEMP",
        'DCGM_FI_DEV_POWER_USAGE{gpu="3"}',
        'DCGM_FI_DEV_GPU_UTIL{Hostname=~"gen-dgx-h100-00[01]",gpu!="0"}',
        '{__name__=~"DCGM_FI_DEV_(GPU_TEMP|SM_CLOCK)",gpu=~"1|2"}',
        "DCGM_FI_DEV_GPU_UTIL offset 2m",
        "DCGM_FI_DEV_GPU_TEMP offset -1m",
        # the official dashboard's panels ($instance, $gpu = All)
        'DCGM_FI_DEV_GPU_TEMP{instance=~".*", gpu=~".*"}',
        'avg(DCGM_FI_DEV_GPU_TEMP{instance=~".*", gpu=~".*"})',
        'sum(DCGM_FI_DEV_POWER_USAGE{instance=~".*", gpu=~".*"})',
        'DCGM_FI_DEV_SM_CLOCK{instance=~".*", gpu=~".*"} * 1000000',
        'DCGM_FI_DEV_FB_USED{instance=~".*", gpu=~"0|1"}',
        'DCGM_FI_DEV_GPU_UTIL{instance=~"gen-dgx-h100-000:9400", gpu=~".*"}',
        "sum by (instance, job) (DCGM_FI_DEV_POWER_USAGE)",
        # aggregations
        "avg by (Hostname) (DCGM_FI_DEV_GPU_TEMP)",
        "max by (Hostname, gpu) (DCGM_FI_DEV_POWER_USAGE)",
        "min(DCGM_FI_DEV_FB_USED)",
        "sum by (modelName) (DCGM_FI_DEV_GPU_UTIL)",
        "sum(DCGM_FI_DEV_FB_USED) by (Hostname)",
        "count without (UUID, device, gpu) (DCGM_FI_DEV_MEM_CLOCK)",
        "sum without (gpu, device, UUID) (DCGM_FI_DEV_POWER_USAGE)",
        "avg by (Hostname) (DCGM_FI_DEV_GPU_TEMP offset 1m)",
        "stddev(DCGM_FI_DEV_POWER_USAGE)",
        "stdvar by (Hostname) (DCGM_FI_DEV_POWER_USAGE)",
        "quantile(0.9, DCGM_FI_DEV_GPU_UTIL)",
        "quantile by (Hostname) (0.5, DCGM_FI_DEV_GPU_TEMP)",
        "topk(3, DCGM_FI_DEV_POWER_USAGE)",
        "bottomk by (Hostname) (2, DCGM_FI_DEV_POWER_USAGE)",
        'count_values("temp", DCGM_FI_DEV_GPU_TEMP)',
        'count_values by (Hostname) ("clock", DCGM_FI_DEV_SM_CLOCK)',
        "group by (Hostname, modelName) (DCGM_FI_DEV_GPU_UTIL)",
        "count(count by (Hostname) (DCGM_FI_DEV_GPU_UTIL))",
        # counters and range functions
        f"rate({E}[1m])",
        f"rate({E}[5m])",
        f"irate({E}[1m])",
        f"increase({E}[2m])",
        f"resets({E}[10m])",
        f"rate({E}[1m] offset 1m)",
        f"sum by (Hostname) (rate({E}[1m])) / 1000",
        f"sum(increase({E}[5m])) / 3.6e9",
        "delta(DCGM_FI_DEV_GPU_TEMP[2m])",
        "idelta(DCGM_FI_DEV_GPU_TEMP[1m])",
        "deriv(DCGM_FI_DEV_FB_USED[3m])",
        "predict_linear(DCGM_FI_DEV_FB_USED[3m], 600)",
        "changes(DCGM_FI_DEV_SM_CLOCK[5m])",
        "avg_over_time(DCGM_FI_DEV_GPU_UTIL[1m])",
        "min_over_time(DCGM_FI_DEV_GPU_TEMP[2m])",
        "max_over_time(DCGM_FI_DEV_GPU_TEMP[2m])",
        "sum_over_time(DCGM_FI_DEV_POWER_USAGE[1m])",
        "count_over_time(DCGM_FI_DEV_POWER_USAGE[90s])",
        "last_over_time(DCGM_FI_DEV_POWER_USAGE[1m])",
        "stddev_over_time(DCGM_FI_DEV_POWER_USAGE[2m])",
        "stdvar_over_time(DCGM_FI_DEV_POWER_USAGE[2m])",
        "present_over_time(DCGM_FI_DEV_GPU_UTIL[1m])",
        "quantile_over_time(0.9, DCGM_FI_DEV_POWER_USAGE[2m])",
        # binary operators and vector matching
        "DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) * 100",
        "DCGM_FI_DEV_FB_USED / on (UUID) DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_FB_USED / ignoring (device) DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_GPU_TEMP > 40",
        "DCGM_FI_DEV_GPU_TEMP > bool 40",
        "40 < DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_GPU_UTIL == 0",
        "DCGM_FI_DEV_POWER_USAGE > on (UUID) DCGM_FI_DEV_GPU_TEMP * 3",
        "DCGM_FI_DEV_GPU_UTIL > bool on (UUID) DCGM_FI_DEV_MEM_COPY_UTIL",
        "DCGM_FI_DEV_GPU_TEMP - on (Hostname) group_left avg by (Hostname) (DCGM_FI_DEV_GPU_TEMP)",
        "avg by (Hostname) (DCGM_FI_DEV_GPU_TEMP) - on (Hostname) group_right DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_GPU_TEMP * on (Hostname) group_left (modelName) max by (Hostname, modelName) (DCGM_FI_DEV_SM_CLOCK)",
        "sum by (Hostname) (DCGM_FI_DEV_POWER_USAGE) / on (Hostname) count by (Hostname) (DCGM_FI_DEV_POWER_USAGE)",
        "DCGM_FI_DEV_GPU_UTIL and on (UUID) (DCGM_FI_DEV_GPU_TEMP > 50)",
        "DCGM_FI_DEV_GPU_UTIL unless on (UUID) (DCGM_FI_DEV_GPU_TEMP > 50)",
        'DCGM_FI_DEV_GPU_UTIL{gpu="0"} or DCGM_FI_DEV_GPU_UTIL{gpu="1"}',
        "(DCGM_FI_DEV_GPU_TEMP > 55) or on (UUID) DCGM_FI_DEV_MEM_CLOCK",
        "-DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_GPU_TEMP % 7",
        "DCGM_FI_DEV_GPU_TEMP ^ 2",
        "1 + 2 * 3",
        "2 ^ 10 - 1",
        # functions
        "abs(DCGM_FI_DEV_GPU_TEMP - 50)",
        "ceil(DCGM_FI_DEV_POWER_USAGE)",
        "floor(DCGM_FI_DEV_POWER_USAGE)",
        "round(DCGM_FI_DEV_POWER_USAGE)",
        "round(DCGM_FI_DEV_POWER_USAGE, 5)",
        "clamp(DCGM_FI_DEV_GPU_UTIL, 10, 90)",
        "clamp_min(DCGM_FI_DEV_GPU_TEMP, 45)",
        "clamp_max(DCGM_FI_DEV_GPU_TEMP, 45)",
        "sqrt(DCGM_FI_DEV_POWER_USAGE)",
        "ln(DCGM_FI_DEV_POWER_USAGE)",
        "exp(DCGM_FI_DEV_GPU_UTIL / 100)",
        "sgn(DCGM_FI_DEV_GPU_TEMP - 50)",
        'label_replace(DCGM_FI_DEV_GPU_TEMP, "host", "$1", "Hostname", "gen-(.*)")',
        'label_join(DCGM_FI_DEV_GPU_TEMP, "id", "/", "Hostname", "gpu")',
        "time()",
        "vector(1)",
        "scalar(sum(DCGM_FI_DEV_GPU_UTIL))",
        "DCGM_FI_DEV_GPU_TEMP - scalar(avg(DCGM_FI_DEV_GPU_TEMP))",
        "timestamp(DCGM_FI_DEV_GPU_TEMP)",
        'absent(DCGM_FI_DEV_GPU_TEMP{gpu="99"})',
        'absent(nonexistent_metric{job="x"})',
        'absent_over_time(DCGM_FI_DEV_GPU_TEMP{gpu="99"}[1m])',
        "absent_over_time(DCGM_FI_DEV_GPU_TEMP[1m])",
        "hour(timestamp(DCGM_FI_DEV_GPU_TEMP))",
        "minute()",
        "day_of_week()",
        "day_of_month(vector(time()))",
        "day_of_year()",
        "days_in_month()",
        "month()",
        "year()",
        'histogram_quantile(0.9, sum by (le) (label_replace(DCGM_FI_DEV_GPU_UTIL, "le", "$1", "gpu", "(.*)"))'
        ' or sum by (le) (label_replace(DCGM_FI_DEV_GPU_UTIL * 0 + 100, "le", "+Inf", "", "")))',
        # subqueries
        "max_over_time(DCGM_FI_DEV_GPU_TEMP[5m:1m])",
        f"avg_over_time(rate({E}[1m])[5m:30s])",
        "max_over_time(max by (Hostname) (DCGM_FI_DEV_POWER_USAGE)[3m:])",
    ]
    # Families in the shape of prometheus/compliance's query list, on DCGM metrics: every
    # aggregation with each grouping, range functions over short and long ranges, every operator
    # between vectors and scalars (with and without bool), math functions, offsets, subqueries.
    P, T, U = "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_TEMP", "DCGM_FI_DEV_GPU_UTIL"
    for op in ("sum", "avg", "min", "max", "count", "stddev", "stdvar", "group"):
        for grouping in ("", " by (Hostname)", " without (gpu, device, UUID)", " by (instance, gpu)"):
            queries.append(f"{op}{grouping} ({P})")
    for k in ("1", "2", "5", "-1", "1e6"):
        queries.append(f"topk({k}, {P})")
        queries.append(f"bottomk by (Hostname) ({k}, {T})")
    for q_ in ("-0.5", "0", "0.25", "1", "1.5"):
        queries.append(f"quantile({q_}, {P})")
        queries.append(f"quantile_over_time({q_}, {T}[1m])")
    for fn in ("rate", "irate", "increase", "delta", "idelta", "deriv", "changes", "resets"):
        for rng in ("30s", "5m", "15m"):
            queries.append(f"{fn}({E if fn in ('rate', 'irate', 'increase', 'resets') else T}[{rng}])")
    for fn in ("avg", "min", "max", "sum", "count", "last", "stddev", "stdvar", "present"):
        for rng in ("15s", "5m"):
            queries.append(f"{fn}_over_time({P}[{rng}])")
    for op in ("+", "-", "*", "/", "%", "^"):
        queries.append(f"{T} {op} 3")
        queries.append(f"3 {op} {T}")
        queries.append(f"{P} {op} on (UUID) {T}")
        queries.append(f"sum by (Hostname) ({P}) {op} on (Hostname) sum by (Hostname) ({T})")
    for op in ("==", "!=", ">", "<", ">=", "<="):
        queries.append(f"{T} {op} 64")
        queries.append(f"{T} {op} bool 64")
        queries.append(f"64 {op} bool {T}")
        queries.append(f"{T} {op} on (UUID) {T} offset 30s")
        queries.append(f"{U} {op} bool ignoring (__name__) {T}")
    for fn in ("abs", "ceil", "floor", "exp", "sqrt", "ln", "log2", "log10", "sgn", "sin", "cos", "tan",
               "asin", "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "deg", "rad"):
        queries.append(f"{fn}({U} / 100)")
    for off in ("30s", "5m", "-30s"):
        queries.append(f"sum by (Hostname) ({T} offset {off})")
        queries.append(f"rate({E}[1m] offset {off})")
    for sub in ("[1m:15s]", "[5m:1m]", "[2m:]", "[10m:2m] offset 1m"):
        queries.append(f"avg_over_time({T}{sub})")
        queries.append(f"max_over_time(sum by (Hostname) (rate({E}[1m])){sub})")
    queries += [
        f"sum by (Hostname) (rate({E}[5m])) / on (Hostname) group_left count by (Hostname) ({P})",
        f"topk(2, sum by (Hostname) ({P}))",
        f"avg(topk(3, {P}))",
        f"count(({T} > 45) and on (UUID) ({U} > 50))",
        f"sum({U} > bool 50) / count({U})",
        f"{T} and {T} > 50",
        f"{T} or vector(0)",
        f"{T} unless {T} < 45",
        f'label_replace({T}, "gpu", "g$1", "gpu", "(.*)")',
        f'label_replace({T}, "x", "$2", "Hostname", "(gen)-(.*)")',
        f'label_replace({T}, "Hostname", "", "Hostname", ".*")',
        f'label_join({T}, "where", ",", "instance", "gpu", "modelName")',
        f"sort(sum by (Hostname) ({P}))",
        f"sort_desc(sum by (Hostname) ({P}))",
        f"clamp({T}, 60, 40)",
        f"round({P}, 0.1)",
        f"scalar({T})",
        f"vector(scalar(sum({P})))",
        f"timestamp({T} offset 1m)",
        f"-{T} + {T}",
        f"({T} + {T}) / 2 == {T}",
        f'count by (__name__) ({{__name__=~"DCGM_FI_DEV_(GPU_TEMP|POWER_USAGE)"}})',
        f"max by (Hostname) (max_over_time({T}[5m]))",
        f"predict_linear({T}[5m], 3600)",
        f"predict_linear({E}[2m], -60)",
        f"deriv(sum by (Hostname) ({P})[5m:30s])",
        f"pi() * 2",
        f"time() - timestamp({T})",
    ]
    # Windows: inside the data, and across its start and end (the 5-minute lookback).
    windows = [(first + 60, first + 300, "7"), (first - 120, first + 90, "15"), (last - 60, last + 400, "20")]
    checked = nonempty = 0
    # Empty in Prometheus by definition (k < 1, min above max): the emptiness is what is compared.
    empty_everywhere = {f"topk(-1, {P})", f"bottomk by (Hostname) (-1, {T})", f"clamp({T}, 60, 40)"}

    def answered(q):
        r = get(prom_url, "/api/v1/query_range", query=q, start=first, end=last, step=60)["data"]["result"]
        return bool(r)

    for q in queries:
        for start, end, step in windows:
            a = get(node_url, "/prometheus/api/v1/query_range", query=q, start=start, end=end, step=step)
            b = get(prom_url, "/api/v1/query_range", query=q, start=start, end=end, step=step)
            assert a["status"] == "success", a
            if not same(a["data"]["result"], b["data"]["result"]):
                sys.exit(f"query_range differs for {q} [{start}, {end}] step {step}: {diff(a['data']['result'], b['data']['result'])}")
            checked += 1
            nonempty += bool(b["data"]["result"])
        for t in (last + 100, first + 200):
            a = get(node_url, "/prometheus/api/v1/query", query=q, time=t)
            b = get(prom_url, "/api/v1/query", query=q, time=t)
            if a["data"]["resultType"] != b["data"]["resultType"] or not same(a["data"]["result"], b["data"]["result"]):
                sys.exit(f"query differs for {q} at {t}: {diff(a['data']['result'], b['data']['result'])}")
            checked += 1
            nonempty += bool(b["data"]["result"])
        # Most queries must have data somewhere, or the comparison proves nothing.
        assert answered(q) or q.startswith("absent") or q in empty_everywhere, f"no data at all for {q}"
    # Range selectors as instant queries answer raw samples.
    for q in ["DCGM_FI_DEV_GPU_TEMP[1m]", f"{E}[30s] offset 1m"]:
        a = get(node_url, "/prometheus/api/v1/query", query=q, time=first + 200)
        b = get(prom_url, "/api/v1/query", query=q, time=first + 200)
        if not same(a["data"]["result"], b["data"]["result"]):
            sys.exit(f"query differs for {q}: {diff(a['data']['result'], b['data']['result'])}")
        checked += 1
    # Grafana posts forms: the same answers by POST.
    body = urllib.parse.urlencode({"query": "avg by (Hostname) (DCGM_FI_DEV_GPU_TEMP)", "start": first, "end": last, "step": 30}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{node_url}/prometheus/api/v1/query_range", data=body), timeout=30) as r:
        posted = json.load(r)
    got = get(node_url, "/prometheus/api/v1/query_range", query="avg by (Hostname) (DCGM_FI_DEV_GPU_TEMP)", start=first, end=last, step=30)
    assert posted == got, "POST and GET differ"
    checked += 1
    # Unsupported PromQL is a 400 naming the construct.
    try:
        get(node_url, "/prometheus/api/v1/query", query="holt_winters(DCGM_FI_DEV_GPU_TEMP[5m], 0.5, 0.5)")
        sys.exit("holt_winters was not refused")
    except urllib.error.HTTPError as e:
        err = json.load(e)
        assert e.code == 400 and "holt_winters" in err["error"], err
    for m in ['DCGM_FI_DEV_GPU_TEMP{gpu="2"}', '{__name__=~"DCGM_FI_DEV_.*_CLOCK"}']:
        a = get(node_url, "/prometheus/api/v1/series", **{"match[]": m})
        b = get(prom_url, "/api/v1/series", **{"match[]": m, "start": first, "end": last})
        if sorted(map(json.dumps, a["data"])) != sorted(map(lambda s: json.dumps(s, sort_keys=True), b["data"])):
            sys.exit(f"series differ for {m}:\nnode {a}\nprom {b}")
        checked += 1
    for label in ("Hostname", "instance", "gpu"):
        a = get(node_url, f"/prometheus/api/v1/label/{label}/values")
        b = get(prom_url, f"/api/v1/label/{label}/values")
        assert a["data"] == b["data"], (a, b)
        checked += 1
    names = set(get(prom_url, "/api/v1/labels")["data"])
    assert names <= set(get(node_url, "/prometheus/api/v1/labels")["data"]), names
    # Latency on this data (informational: the machine is shared; the benchmark is `bench`).
    def p50(base, path, **params):
        times = []
        for _ in range(30):
            t = time.perf_counter()
            get(base, path, **params)
            times.append(time.perf_counter() - t)
        return sorted(times)[len(times) // 2] * 1000

    agg = dict(query="avg by (Hostname) (DCGM_FI_DEV_GPU_TEMP)", start=first, end=last, step=15)
    print(f"promql: avg by (Hostname) over {int(last - first)} s, step 15 s, p50: "
          f"node {p50(node_url, '/prometheus/api/v1/query_range', **agg):.1f} ms, "
          f"Prometheus {p50(prom_url, '/api/v1/query_range', **agg):.1f} ms")
    print(f"promql: {checked} answers ({nonempty} non-empty) from {len(queries)} queries identical to Prometheus {get(prom_url, '/api/v1/status/buildinfo')['data']['version']}")
finally:
    node.terminate()
    prom.terminate()
    node.wait()
    prom.wait()
