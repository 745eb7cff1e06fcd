"""Workload attribution at fleet scale, side by side with Prometheus 2.42, one run, the same data.

GPUS GPUs (hosts of 8) are scraped every INTERVAL seconds for HOURS hours; each host runs one pod
(8 GPUs) that is replaced every POD_MINUTES minutes (hosts' changes spread over the period), in
one of 8 namespaces. Five DCGM fields per GPU. The same remote-write 1.0 requests go to our node
and to Prometheus (`--web.enable-remote-write-receiver`): every series carries `pod`,
`namespace` and `container` as dcgm-exporter's Kubernetes mapping labels them, and when a pod
leaves, its series get Prometheus' staleness markers at the next scrape, as a scraping
Prometheus would forward them. Prometheus stores a new series per pod; our node one series per
GPU and metric plus the GPU's workload observations.

Reported: series, peak and final RSS, disk per sample, server CPU for the ingest; then workload
queries (`avg by (namespace)`, `sum by (pod)`, instant and range) checked equal between the two
and timed (p50).

A benchmark, not a test. Usage:
  python3 workload-compare.py NODE_BINARY WORKDIR [GPUS] [HOURS] [INTERVAL] [POD_MINUTES] [QUERIES]
Defaults: 10000 GPUs, 6 h, 30 s, 10 min, 20 queries. Needs Debian's prometheus and cramjam.
"""
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import cramjam

binary, work = sys.argv[1], sys.argv[2]
GPUS, HOURS, INTERVAL, POD_MINUTES, QUERIES = (
    float(a) for a in (sys.argv[3:] + ["10000", "6", "30", "10", "20"][len(sys.argv) - 3:])[:5])
GPUS, INTERVAL, QUERIES = int(GPUS), int(INTERVAL), int(QUERIES)
SCRAPES = int(HOURS * 3600 // INTERVAL)
POD_SCRAPES = int(POD_MINUTES * 60 // INTERVAL)
T0 = 1752796800000  # 2025-07-18T00:00:00Z
SENDERS = int(os.environ.get("SENDERS", "2"))
SAMPLES_PER_WRITE = int(os.environ.get("SAMPLES_PER_WRITE", "2000"))
STALE = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000002))[0]
METRICS = ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_GPU_TEMP",
           "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_SM_CLOCK"]
NAMESPACES = [f"team-{i}" for i in range(8)]
tick = os.sysconf("SC_CLK_TCK")


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc(pid, key):
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def cpu(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / tick


def du(path):
    return int(subprocess.run(["du", "-sb", path], capture_output=True, text=True).stdout.split()[0])


# ---- the data ---------------------------------------------------------------------------------

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


def pod_of(host, s):
    """(epoch, namespace, pod) of a host at scrape s: a new pod every POD_SCRAPES, spread by host."""
    epoch = (s + host * 7919) // POD_SCRAPES
    return epoch, NAMESPACES[(host * 31 + epoch) % len(NAMESPACES)], f"job-{host:05d}-{epoch}"


def labels(gpu, metric, ns, pod):
    host = gpu // 8
    pairs = sorted({"__name__": metric, "UUID": f"GPU-{gpu:08x}-0000-4000-8000-{gpu:012x}", "gpu": str(gpu % 8),
                    "device": f"nvidia{gpu % 8}", "modelName": "NVIDIA H100 80GB HBM3",
                    "Hostname": f"node-{host:05d}", "instance": f"node-{host:05d}:9400", "job": "dcgm",
                    "container": "main", "namespace": ns, "pod": pod}.items())
    return b"".join(field(1, field(1, k.encode()) + field(2, v.encode())) for k, v in pairs)


def value(gpu, metric, s):
    phase = (gpu * 13 + s) % 97
    if metric == "DCGM_FI_DEV_GPU_UTIL":
        return float(60 + phase % 40)
    if metric == "DCGM_FI_DEV_POWER_USAGE":
        return round(250 + phase * 3.217, 3)
    if metric == "DCGM_FI_DEV_GPU_TEMP":
        return float(45 + phase % 30)
    if metric == "DCGM_FI_DEV_FB_USED":
        return float(70000 + phase * 11)
    return 1980.0


def sample(t, v):
    return b"\x09" + struct.pack("<d", v) + b"\x10" + varint(t)


def send(conn, body):
    while True:
        conn.request("POST", "/api/v1/write", body, {
            "Content-Encoding": "snappy", "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0"})
        r = conn.getresponse()
        text = r.read()
        if r.status < 300:
            return
        if r.status not in (429, 503):
            raise SystemExit(f"remote write: {r.status} {text[:300]!r}")
        time.sleep(float(r.getheader("Retry-After", "1")))


def sender(args):
    """Sends the hosts `host % SENDERS == shard` scrape by scrape, each request to every URL."""
    shard, urls = args
    conns = [http.client.HTTPConnection(urllib.parse.urlsplit(u).hostname, urllib.parse.urlsplit(u).port,
                                        timeout=300) for u in urls]
    hosts = [h for h in range((GPUS + 7) // 8) if h % SENDERS == shard]
    cache = {}
    batch, n, stale = [], 0, 0

    def flush():
        nonlocal batch, n
        if batch:
            body = bytes(cramjam.snappy.compress_raw(b"".join(batch)))
            for c in conns:
                send(c, body)
        batch, n = [], 0

    for s in range(SCRAPES):
        t = T0 + s * INTERVAL * 1000
        for host in hosts:
            epoch, ns, pod = pod_of(host, s)
            if s and pod_of(host, s - 1)[0] != epoch:
                _, old_ns, old_pod = pod_of(host, s - 1)
                for gpu in range(host * 8, min(GPUS, host * 8 + 8)):
                    for m in METRICS:
                        # The scrape loop's staleness marker for the pod's series that left.
                        batch.append(field(1, labels(gpu, m, old_ns, old_pod) + field(2, sample(t, STALE))))
                        n += 1
                        stale += 1
            for gpu in range(host * 8, min(GPUS, host * 8 + 8)):
                for m in METRICS:
                    key = (gpu, m)
                    held = cache.get(key)
                    if held is None or held[0] != epoch:
                        held = cache[key] = (epoch, labels(gpu, m, ns, pod))
                    batch.append(field(1, held[1] + field(2, sample(t, value(gpu, m, s)))))
                    n += 1
                if n >= SAMPLES_PER_WRITE:
                    flush()
    flush()
    return stale


# ---- servers ----------------------------------------------------------------------------------

def wait_http(url):
    for _ in range(600):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered")


def start_ours():
    p = subprocess.Popen([binary, "--data-dir", f"{work}/ours", "--http-addr", "127.0.0.1:0", "--no-stream",
                          # The same read bound as Prometheus gets below: the 6 h aggregates read all.
                          "--query-max-samples", "200000000"],
                         stdout=subprocess.PIPE, stderr=open(f"{work}/ours.log", "w"), text=True)
    return p, p.stdout.readline().strip().removeprefix("listening on ")


def start_prom():
    port_ = port()
    with open(f"{work}/prom.yml", "w") as f:
        f.write("global:\n  scrape_interval: 1h\n")
    p = subprocess.Popen(["prometheus", f"--config.file={work}/prom.yml", f"--storage.tsdb.path={work}/prom",
                          "--storage.tsdb.retention.time=100y", f"--web.listen-address=127.0.0.1:{port_}",
                          "--web.enable-remote-write-receiver", "--query.max-samples=200000000"],
                         stdout=subprocess.DEVNULL, stderr=open(f"{work}/prom.log", "w"))
    url = f"http://127.0.0.1:{port_}"
    wait_http(f"{url}/-/ready")
    return p, url


def metric(url, name):
    text = urllib.request.urlopen(f"{url}/metrics", timeout=60).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.split("{")[0].split(" ")[0] == name)


def get(url, path, **params):
    u = urllib.parse.urlsplit(url)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    c.request("GET", f"{path}?{urllib.parse.urlencode(params)}")
    r = c.getresponse()
    body = r.read()
    if r.status != 200:
        raise SystemExit(f"{url}{path} {params}: {r.status} {body[:300]!r}")
    return json.loads(body)


def same(a, b, q):
    key = lambda s: json.dumps(s["metric"], sort_keys=True)  # noqa: E731
    a, b = sorted(a, key=key), sorted(b, key=key)
    assert [key(s) for s in a] == [key(s) for s in b], f"{q}: series differ ({len(a)} vs {len(b)})"
    for x, y in zip(a, b):
        xs = x.get("values") or [x["value"]]
        ys = y.get("values") or [y["value"]]
        assert [t for t, _ in xs] == [t for t, _ in ys], f"{q}: steps differ for {key(x)}"
        for (_, u), (_, v) in zip(xs, ys):
            assert abs(float(u) - float(v)) <= 1e-9 * max(1.0, abs(float(v))), f"{q}: {u} != {v} for {key(x)}"
    return len(a)


def p50(url, path, **params):
    times = []
    for _ in range(QUERIES):
        t0 = time.perf_counter()
        get(url, path, **params)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main():
    samples = GPUS * len(METRICS) * SCRAPES
    print(f"{GPUS} GPUs x {len(METRICS)} fields, {SCRAPES} scrapes at {INTERVAL} s ({HOURS:g} h), "
          f"a new pod per host every {POD_MINUTES:g} min: {samples:,} samples")
    (ours, ours_url), (prom, prom_url) = start_ours(), start_prom()
    try:
        c0 = (cpu(ours.pid), cpu(prom.pid))
        t0 = time.perf_counter()
        with multiprocessing.Pool(SENDERS) as pool:
            stale = sum(pool.map(sender, [(i, [ours_url, prom_url]) for i in range(SENDERS)]))
        secs = time.perf_counter() - t0
        c1 = (cpu(ours.pid), cpu(prom.pid))
        print(f"sent in {secs:.0f} s, with {stale:,} staleness markers (both servers answer each request before the next)")
        end_s = (T0 + (SCRAPES - 1) * INTERVAL * 1000) // 1000
        # Both must hold everything before they are measured and asked.
        q = f"sum(count_over_time(DCGM_FI_DEV_GPU_UTIL[{int(HOURS * 3600) + 60}s]))"
        for url, path in ((ours_url, "/prometheus/api/v1/query"), (prom_url, "/api/v1/query")):
            got = get(url, path, query=q, time=end_s)["data"]["result"]
            assert got and int(float(got[0]["value"][1])) == GPUS * SCRAPES, f"{url}: {got}"
        ours_series = metric(ours_url, "telemetry_store_series")
        prom_series = metric(prom_url, "prometheus_tsdb_head_series_created_total")
        ours_samples = metric(ours_url, "telemetry_store_samples")
        prom_samples = metric(prom_url, "prometheus_tsdb_head_samples_appended_total")
        print(f"series: ours {ours_series:,.0f} (workloads {metric(ours_url, 'telemetry_store_workloads'):,.0f}), "
              f"Prometheus {prom_series:,.0f} created ({metric(prom_url, 'prometheus_tsdb_head_series'):,.0f} in its head now)")
        print(f"RSS: ours peak {proc(ours.pid, 'VmHWM'):,.0f} MiB, now {proc(ours.pid, 'VmRSS'):,.0f} MiB; "
              f"Prometheus peak {proc(prom.pid, 'VmHWM'):,.0f} MiB, now {proc(prom.pid, 'VmRSS'):,.0f} MiB")
        print(f"ingest CPU: ours {(c1[0] - c0[0]) / samples * 1e6:.2f} s per M samples, "
              f"Prometheus {(c1[1] - c0[1]) / samples * 1e6:.2f}")
        d_ours, d_broker = metric(ours_url, "telemetry_store_disk_bytes"), metric(ours_url, "telemetry_broker_disk_bytes")
        d_prom = du(f"{work}/prom")
        print(f"disk: ours {d_ours / 2**20:,.0f} MiB store = {d_ours / samples:.2f} bytes per DCGM sample "
              f"({ours_samples:,.0f} stored, observations included), broker logs {d_broker / 2**20:,.0f} MiB; "
              f"Prometheus {d_prom / 2**20:,.0f} MiB = {d_prom / samples:.2f} bytes per sample "
              f"({prom_samples:,.0f} appended, markers included; WAL and blocks)")
        first = T0 // 1000
        checks = [
            ("avg by (namespace) (DCGM_FI_DEV_GPU_UTIL)", dict(start=end_s - 3600, end=end_s, step=60)),
            ("sum by (pod) (DCGM_FI_DEV_POWER_USAGE)", dict(start=end_s - 3600, end=end_s, step=60)),
            ('sum by (pod) (DCGM_FI_DEV_POWER_USAGE{namespace="team-3"})', dict(start=first, end=end_s, step=300)),
            ("count by (namespace) (DCGM_FI_DEV_GPU_TEMP)", dict(start=first, end=end_s, step=600)),
            # One pod of one host, over the whole period: the 8 GPUs that held it, in a fleet.
            (f'sum by (pod) (DCGM_FI_DEV_POWER_USAGE{{pod="{pod_of(min(17, (GPUS + 7) // 8 - 1), SCRAPES // 2)[2]}"}})',
             dict(start=first, end=end_s, step=60)),
        ]
        for q, window in checks:
            try:
                a = get(ours_url, "/prometheus/api/v1/query_range", query=q, **window)["data"]["result"]
            except SystemExit as refused:  # a bound of ours (named in the message): reported, not fatal
                print(f"{q}: ours refused: {refused}")
                continue
            b = get(prom_url, "/api/v1/query_range", query=q, **window)["data"]["result"]
            n = same(a, b, q)
            span = (window["end"] - window["start"]) // 60
            print(f"{q}, {span} min, step {window['step']} s: {n} series, equal; p50 ours "
                  f"{p50(ours_url, '/prometheus/api/v1/query_range', query=q, **window):.1f} ms, Prometheus "
                  f"{p50(prom_url, '/api/v1/query_range', query=q, **window):.1f} ms")
        for at in (end_s - 7 * INTERVAL, end_s):
            q = "sum by (pod) (DCGM_FI_DEV_POWER_USAGE)"
            a = get(ours_url, "/prometheus/api/v1/query", query=q, time=at)["data"]["result"]
            b = get(prom_url, "/api/v1/query", query=q, time=at)["data"]["result"]
            print(f"{q} at {at}: {same(a, b, q)} pods, equal")
    finally:
        for p in (ours, prom):
            p.terminate()
            p.wait()


if __name__ == "__main__":
    main()
