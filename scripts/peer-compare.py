"""Side by side with VictoriaMetrics and Prometheus, one run, the same generated samples.

Rows (each figure a median over RUNS where it is a rate, p50 over QUERIES where it is a latency):
  1. bulk HTTP ingest: `telemetry-node import` (CSV) against VictoriaMetrics'
     `/api/v1/import/prometheus` (the same samples as Prometheus text);
  2. remote write 1.0: the same snappy-compressed WriteRequests (500 samples each, one series
     per GPU shard, SENDERS connections) into our node, VictoriaMetrics and Prometheus
     (`--web.enable-remote-write-receiver`);
  3. `avg by (Hostname) (DCGM_FI_DEV_GPU_TEMP)` over the 30 minutes, step 15 s (VictoriaMetrics
     with `nocache=1`), the answers of ours and Prometheus checked equal;
  4. one GPU's 10 metrics over the 30 minutes raw: our columnar page, VictoriaMetrics'
     `/api/v1/export`, Prometheus' range-vector query.
Each server gets a fresh data directory per run; the query rows use the stores of the last run.
Server CPU is user + system from /proc; client CPU is the sender's (this script's threads or the
`import` process); peak RSS is VmHWM. SENDERS and SAMPLES_PER_WRITE (environment) change the
remote write load (defaults 4 and Prometheus' 500).

A benchmark, not a test: the figures go in the README and the issue notes.
Usage: python3 peer-compare.py NODE_BINARY WORKDIR [HOSTS] [SCRAPES] [RUNS] [QUERIES]
Defaults: 13 hosts of 8 GPUs, 1,800 scrapes at 1 s (1.87 M samples, 30 min), 2 runs, 50 queries.
Needs Debian's victoria-metrics and prometheus, and the Python package cramjam (snappy).
"""
import csv
import http.client
import json
import resource
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import cramjam

binary, work = sys.argv[1], sys.argv[2]
hosts, scrapes, runs, queries = (int(a) for a in (sys.argv[3:] + ["13", "1800", "2", "50"][len(sys.argv) - 3:])[:4])
tick = os.sysconf("SC_CLK_TCK")
SENDERS = int(os.environ.get("SENDERS", "4"))
SAMPLES_PER_WRITE = int(os.environ.get("SAMPLES_PER_WRITE", "500"))


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def peak_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024


# ---- data -------------------------------------------------------------------------------------

csv_path, prom_path = f"{work}/in.csv", f"{work}/in.prom"
subprocess.run([binary, "gen-csv", "--hosts", str(hosts), "--scrapes", str(scrapes), "-o", csv_path],
               check=True, stderr=subprocess.DEVNULL)
series, by_uuid = {}, {}
with open(csv_path) as f, open(prom_path, "w") as out:
    for r in csv.DictReader(f):
        t = int(time.mktime(time.strptime(r["timestamp"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone) * 1000
        labels = {"__name__": r["metric_name"], "UUID": r["uuid"], "gpu": r["gpu_id"], "device": r["device"],
                  "modelName": r["modelName"], "Hostname": r["Hostname"]}
        for k in ("instance", "job", "DCGM_FI_DRIVER_VERSION"):
            m = re.search(rf'(?:^|,){k}="([^"]*)"', r["labels_raw"])
            if m:
                labels[k] = m.group(1)
        key = tuple(sorted(labels.items()))
        series.setdefault(key, []).append((t, float(r["value"])))
        by_uuid.setdefault(r["uuid"], r["Hostname"])
        ls = ",".join(f'{k}="{v}"' for k, v in key if k != "__name__")
        out.write(f'{r["metric_name"]}{{{ls}}} {r["value"]} {t}\n')
samples = sum(len(s) for s in series.values())
first = min(s[0][0] for s in series.values()) // 1000
last = max(s[-1][0] for s in series.values()) // 1000
uuid = sorted(by_uuid)[0]
print(f"{samples} samples, {len(series)} series, {len(by_uuid)} GPUs, {last - first + 1} s; "
      f"CSV {os.path.getsize(csv_path)} bytes, Prometheus text {os.path.getsize(prom_path)} bytes")


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, payload):
    return varint(num << 3 | 2) + varint(len(payload)) + payload


def encoded_labels(key):
    return b"".join(field(1, field(1, k.encode()) + field(2, v.encode())) for k, v in key)


def sample_pb(t, v):
    import struct
    return b"\x09" + struct.pack("<d", v) + b"\x10" + varint(t)


# Remote write as Prometheus sends it: shards by series (here by GPU, so each series stays in
# time order on one connection), each request SAMPLES_PER_WRITE samples in time order, one sample
# per TimeSeries with its full label set.
shards = [[] for _ in range(SENDERS)]
label_bytes = {key: encoded_labels(key) for key in series}
for key, points in series.items():
    shard = hash(dict(key)["UUID"]) % SENDERS
    shards[shard].extend((t, v, key) for t, v in points)
writes = [[] for _ in range(SENDERS)]
wire = 0
for shard, out in zip(shards, writes):
    shard.sort(key=lambda s: s[0])
    for i in range(0, len(shard), SAMPLES_PER_WRITE):
        body = b"".join(field(1, label_bytes[k] + field(2, sample_pb(t, v))) for t, v, k in shard[i:i + SAMPLES_PER_WRITE])
        out.append(bytes(cramjam.snappy.compress_raw(body)))
        wire += len(out[-1])
print(f"remote write: {sum(len(w) for w in writes)} requests, {wire} bytes on the wire")


# ---- servers ----------------------------------------------------------------------------------

def wait_http(url):
    for _ in range(300):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered")


def start_ours(name):
    p = subprocess.Popen([binary, "--data-dir", f"{work}/{name}", "--http-addr", "127.0.0.1:0", "--no-stream"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    return p, p.stdout.readline().strip().removeprefix("listening on ")


def start_vm(name):
    port_ = port()
    p = subprocess.Popen(["victoria-metrics", f"-storageDataPath={work}/{name}", f"-httpListenAddr=127.0.0.1:{port_}",
                          "-retentionPeriod=100y"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port_}"
    wait_http(f"{url}/health")
    return p, url


def start_prom(name):
    port_ = port()
    with open(f"{work}/prom.yml", "w") as f:
        f.write("global:\n  scrape_interval: 1h\n")
    p = subprocess.Popen(["prometheus", f"--config.file={work}/prom.yml", f"--storage.tsdb.path={work}/{name}",
                          "--storage.tsdb.retention.time=100y", f"--web.listen-address=127.0.0.1:{port_}",
                          "--web.enable-remote-write-receiver"],
                         stdout=subprocess.DEVNULL, stderr=open(f"{work}/{name}.log", "w"))
    url = f"http://127.0.0.1:{port_}"
    wait_http(f"{url}/-/ready")
    return p, url


def stop(p):
    p.terminate()
    p.wait()


def client_cpu():
    """CPU seconds of this script and its finished children (the `import` client)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(p, work_fn):
    c0, k0, t0 = cpu(p.pid), client_cpu(), time.perf_counter()
    work_fn()
    return time.perf_counter() - t0, cpu(p.pid) - c0, client_cpu() - k0


def import_ours(url):
    subprocess.run([binary, "import", csv_path, "--url", url], check=True, stdout=subprocess.DEVNULL)


def import_vm(url):
    with open(prom_path, "rb") as f:
        urllib.request.urlopen(urllib.request.Request(f"{url}/api/v1/import/prometheus", data=f), timeout=600).read()


def remote_write(path):
    def send(url):
        u = urllib.parse.urlsplit(url)
        errors = []

        def sender(requests):
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
            for body in requests:
                while True:
                    conn.request("POST", path, body, {
                        "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
                        "X-Prometheus-Remote-Write-Version": "0.1.0"})
                    r = conn.getresponse()
                    text = r.read()
                    if r.status < 300:
                        break
                    if r.status not in (429, 503):
                        errors.append(f"{r.status} {text[:200]!r}")
                        return
                    time.sleep(float(r.getheader("Retry-After", "1")))
        threads = [threading.Thread(target=sender, args=(w,)) for w in writes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise SystemExit(f"remote write to {url}: {errors[0]}")
    return send


def median_row(name, results):
    secs = statistics.median(r[0] for r in results)
    c = statistics.median(r[1] for r in results)
    rss = max(r[2] for r in results)
    k = statistics.median(r[3] for r in results)
    print(f"  {name}: {samples / secs / 1e6:.2f} M samples/s, {c / samples * 1e6:.2f} server CPU-s per M "
          f"(client {k / samples * 1e6:.2f}), peak RSS {rss:.0f} MiB  "
          f"(runs: {', '.join(f'{samples / r[0] / 1e6:.2f}' for r in results)} M/s)")


def run_rows(title, contenders):
    print(title)
    kept = {}
    results = {name: [] for name, _, _ in contenders}
    for i in range(runs):
        for name, start, work_fn in contenders:
            p, url = start(f"{name.split()[0].lower()}-{title.split()[0].lower()}{i}")
            secs, c, k = timed(p, lambda: work_fn(url))
            results[name].append((secs, c, peak_rss_mib(p.pid), k))
            if i == runs - 1:
                kept[name] = (p, url)
            else:
                stop(p)
    for name, _, _ in contenders:
        median_row(name, results[name])
    return kept


# ---- queries ----------------------------------------------------------------------------------

def client(url):
    u = urllib.parse.urlsplit(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=60)


def get(conn, path, **params):
    conn.request("GET", f"{path}?{urllib.parse.urlencode(params, doseq=True)}")
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"{path}: {r.status} {body[:300]!r}")
    return body


def p50(url, path, **params):
    conn = client(url)
    for _ in range(5):
        get(conn, path, **params)
    times, size = [], 0
    for _ in range(queries):
        t0 = time.perf_counter()
        size = len(get(conn, path, **params))
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return f"p50 {statistics.median(times):.2f} ms, p90 {times[int(len(times) * 0.9)]:.2f} ms, {size} bytes"


def settle(name, url, path):
    """Waits until every sample is queryable: VictoriaMetrics and Prometheus buffer before search."""
    if path is None:
        return
    if "victoria" in name.lower():
        urllib.request.urlopen(f"{url}/internal/force_flush", timeout=60).read()
    conn = client(url)
    names = sorted({dict(k)["__name__"] for k in series})
    # Per metric: without its name, the metrics of one GPU would be one label set twice.
    queries_ = [f"sum(count_over_time({n}[{last - first + 60}s]))" for n in names]
    for _ in range(600):
        held = 0
        for q in queries_:
            result = json.loads(get(conn, path, query=q, time=last, nocache=1))["data"]["result"]
            held += float(result[0]["value"][1]) if result else 0
        if held >= samples:
            return
        time.sleep(0.2)
    raise SystemExit(f"{name} never held all {samples} samples")


def query_rows(stores):
    agg = dict(query="avg by (Hostname) (DCGM_FI_DEV_GPU_TEMP)", start=first, end=first + 1800, step=15)
    ours_url, vm_url, prom_url = stores
    ours = json.loads(get(client(ours_url), "/prometheus/api/v1/query_range", **agg))["data"]["result"]
    theirs = json.loads(get(client(prom_url), "/api/v1/query_range", **agg))["data"]["result"]
    key = lambda s: s["metric"].get("Hostname", "")  # noqa: E731
    assert [key(s) for s in sorted(ours, key=key)] == [key(s) for s in sorted(theirs, key=key)], "series differ"
    for a, b in zip(sorted(ours, key=key), sorted(theirs, key=key)):
        assert [t for t, _ in a["values"]] == [t for t, _ in b["values"]], "steps differ"
        assert all(abs(float(x) - float(y)) <= 1e-9 * max(1, abs(float(y))) for (_, x), (_, y) in
                   zip(a["values"], b["values"])), "values differ"
    print(f"{agg['query']}, 30 min, step 15 s ({len(ours)} series, ours = Prometheus):")
    print(f"  ours:            {p50(ours_url, '/prometheus/api/v1/query_range', **agg)}")
    print(f"  VictoriaMetrics: {p50(vm_url, '/api/v1/query_range', nocache=1, **agg)} (nocache=1)")
    print(f"  Prometheus:      {p50(prom_url, '/api/v1/query_range', **agg)}")
    start_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first))
    end_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(first + 1800))
    points = sum(len(p) for k, p in series.items() if dict(k)["UUID"] == uuid)
    sel = '{UUID="%s"}' % uuid
    print(f"one GPU's 10 metrics, 30 min raw ({points} points):")
    print(f"  ours, columnar:  {p50(ours_url, f'/api/v1/gpus/{uuid}/telemetry', format='columnar', limit=100000, start_time=start_time, end_time=end_time)}")
    print(f"  VictoriaMetrics: {p50(vm_url, '/api/v1/export', **{'match[]': sel}, start=first, end=first + 1800)}")
    print(f"  Prometheus:      {p50(prom_url, '/api/v1/query', query=f'{sel}[1801s]', time=first + 1800)}")


contenders_import = [("ours import", start_ours, import_ours), ("VictoriaMetrics import/prometheus", start_vm, import_vm)]
contenders_write = [("ours", start_ours, remote_write("/api/v1/write")),
                    ("VictoriaMetrics", start_vm, remote_write("/api/v1/write")),
                    ("Prometheus", start_prom, remote_write("/api/v1/write"))]
kept = {}
try:
    kept.update(run_rows("bulk ingest over HTTP", contenders_import))
    kept.update(run_rows("remote write 1.0", contenders_write))
    for name in ("ours", "VictoriaMetrics"):
        stop(kept.pop(name)[0])
    stores = (kept["ours import"][1], kept["VictoriaMetrics import/prometheus"][1], kept["Prometheus"][1])
    for name, path in (("ours import", "/prometheus/api/v1/query"), ("VictoriaMetrics import/prometheus", "/api/v1/query"),
                       ("Prometheus", "/api/v1/query")):
        settle(name, kept[name][1], path)
    query_rows(stores)
finally:
    for p, _ in kept.values():
        stop(p)
