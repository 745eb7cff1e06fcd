"""Remote write from a real Prometheus into a 3-node cluster, and the official dashboard's queries.

Two fake dcgm-exporters (4 GPUs each, the exporter's text format, a counter included) are scraped
every second by Debian's Prometheus 2.42, which remote-writes everything it scrapes to node 0 of a
3-node cluster (replication factor 2). Their GPUs run pods as dcgm-exporter's Kubernetes mapping
labels them (`pod`, `namespace`, `container`), a new pod every 5 s, one GPU idle every other
period and one never used, so Prometheus' scrape loop writes staleness markers as pods move and
the node must resolve each sample's workload at its own time; workload queries (`by (namespace)`,
`by (pod)`, matchers on `pod`) are compared too. Once every sample Prometheus holds has arrived, the panels
of NVIDIA's dcgm-exporter dashboard (its $instance and $gpu variables as Grafana fills them) and
a few counter queries are asked of node 1 and of Prometheus, over the same window: the same
series, labels and values are expected. Series that are not DCGM fields (`up`, `scrape_*`) must
be refused and counted, not stored. Usage: python3 remote-write-check.py NODE_BINARY WORKDIR [DASHBOARD_JSON] (its panels replace the
built-in copy of their queries when given).
"""
import http.server
import json
import math
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

binary, work = sys.argv[1], sys.argv[2]


def port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


FIELDS = [("DCGM_FI_DEV_GPU_TEMP", "gauge"), ("DCGM_FI_DEV_POWER_USAGE", "gauge"),
          ("DCGM_FI_DEV_SM_CLOCK", "gauge"), ("DCGM_FI_DEV_GPU_UTIL", "gauge"),
          ("DCGM_FI_DEV_FB_USED", "gauge"), ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "gauge"),
          ("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "counter")]


def workload(host, g, t):
    """The pod labels of GPU g at time t: a new pod every 5 s; GPU 1 idle every other period,
    GPU 3 never used."""
    period = int(t) // 5
    if g == 3 or (g == 1 and period % 2):
        return ""
    ns = "ml" if period % 2 else "batch"
    return f',container="main",namespace="{ns}",pod="{host}-job-{period}-{g // 2}"'


def exporter(host):
    """A dcgm-exporter look-alike for one host: values move with the clock."""
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            t = time.time()
            out = []
            for name, kind in FIELDS:
                out.append(f"# HELP {name} {name}.\n# TYPE {name} {kind}\n")
                for g in range(4):
                    v = {"DCGM_FI_DEV_GPU_TEMP": 40 + g + int(t) % 7,
                         "DCGM_FI_DEV_POWER_USAGE": round(100 + 50 * math.sin(t / 10 + g), 3),
                         "DCGM_FI_DEV_SM_CLOCK": 1980 if int(t) % 4 else 345,
                         "DCGM_FI_DEV_GPU_UTIL": (int(t) * 7 + g * 13) % 101,
                         "DCGM_FI_DEV_FB_USED": 1000 * g + int(t) % 100,
                         "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": round((t % 10) / 10, 3),
                         "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": int((t - 1.7e9) * 150_000) + g}[name]
                    out.append(f'{name}{{gpu="{g}",UUID="GPU-{host}-{g}",device="nvidia{g}",'
                               f'modelName="NVIDIA H100 80GB HBM3",Hostname="{host}",'
                               f'DCGM_FI_DRIVER_VERSION="535.129.03"{workload(host, g, t)}}} {v}\n')
            body = "".join(out).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def get(base, path, **params):
    q = urllib.parse.urlencode(params, doseq=True)
    try:
        with urllib.request.urlopen(f"{base}{path}?{q}", timeout=30) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        sys.exit(f"{base}{path}?{q}: {e.code} {e.read().decode()[:500]}")


def start_node(i, seed_addr, addr):
    args = [binary, "--data-dir", f"{work}/node{i}", "--http-addr", "127.0.0.1:0", "--no-stream",
            "--node-name", f"telemetry-{i}", "--cluster-addr", addr, "--cluster-cookie", "remote-write-check",
            "--partitions", "16", "--replication-factor", "2", "--liveness-timeout", "2s"]
    if seed_addr:
        args += ["--seeds", seed_addr]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=open(f"{work}/node{i}.log", "w"), text=True)
    return p, p.stdout.readline().strip().removeprefix("listening on ")


exporters = [exporter("host-a"), exporter("host-b")]
targets = [f"127.0.0.1:{e.server_address[1]}" for e in exporters]
addrs = [f"127.0.0.1:{port()}" for _ in range(3)]
procs, urls = [], []
prom = None
try:
    for i in range(3):
        p, u = start_node(i, addrs[0] if i else None, addrs[i])
        procs.append(p)
        urls.append(u)
    deadline = time.time() + 60
    while len([m for m in get(urls[1], "/api/v1/cluster")["members"] if m.get("status", "up") == "up"]) < 3:
        assert time.time() < deadline, "the cluster did not form"
        time.sleep(0.2)

    prom_port = port()
    with open(f"{work}/prom.yml", "w") as f:
        f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: dcgm
    static_configs:
      - targets: {json.dumps(targets)}
remote_write:
  - url: {urls[0]}/api/v1/write
    queue_config:
      batch_send_deadline: 1s
      min_backoff: 100ms
""")
    prom = subprocess.Popen(["prometheus", f"--config.file={work}/prom.yml", f"--storage.tsdb.path={work}/prom",
                             f"--web.listen-address=127.0.0.1:{prom_port}"],
                            stdout=subprocess.DEVNULL, stderr=open(f"{work}/prom.log", "w"))
    prom_url = f"http://127.0.0.1:{prom_port}"
    start = time.time()
    time.sleep(20)
    end = int(time.time()) - 3
    begin = int(start) + 3
    # Every sample Prometheus holds up to `end` has reached the cluster.
    def total(base, prefix):
        n = 0
        for name, _ in FIELDS:
            r = get(base, f"{prefix}/api/v1/query", query=f"sum(count_over_time({name}[1h]))", time=end)
            n += int(r["data"]["result"][0]["value"][1]) if r["data"]["result"] else 0
        return n

    deadline = time.time() + 60
    while True:
        a, b = total(urls[1], "/prometheus"), total(prom_url, "")
        if a == b > 0:
            break
        assert time.time() < deadline, f"samples did not all arrive: node {a}, prometheus {b}"
        time.sleep(0.5)
    samples = b

    # The dashboard's variables as Grafana fills them: label_values(DCGM_FI_DEV_GPU_TEMP, instance/gpu).
    variables = {}
    for label in ("instance", "gpu"):
        a = get(urls[1], f"/prometheus/api/v1/label/{label}/values", **{"match[]": "DCGM_FI_DEV_GPU_TEMP"})["data"]
        b = get(prom_url, f"/api/v1/label/{label}/values", **{"match[]": "DCGM_FI_DEV_GPU_TEMP"})["data"]
        assert a == b, f"{label} values: node {a}, prometheus {b}"
        variables[label] = "|".join(b)
    # Workload labels take their values from the samples' own times. Prometheus lists the pods
    # it scraped a moment ago too, which may still be on their way: ask until both agree.
    for label, match in (("namespace", "DCGM_FI_DEV_GPU_TEMP"), ("pod", 'DCGM_FI_DEV_GPU_UTIL{namespace="ml"}')):
        deadline = time.time() + 30
        while True:
            a = get(urls[1], f"/prometheus/api/v1/label/{label}/values", **{"match[]": match})["data"]
            b = get(prom_url, f"/api/v1/label/{label}/values", **{"match[]": match})["data"]
            if a == b and b:
                break
            assert time.time() < deadline, f"{label} values of {match}: node {a}, prometheus {b}"
            time.sleep(0.2)
    for match in ('DCGM_FI_DEV_GPU_TEMP{namespace="ml"}', 'DCGM_FI_DEV_POWER_USAGE{pod!="", gpu="1"}'):
        deadline = time.time() + 30
        while True:
            key = lambda s: json.dumps(s, sort_keys=True)  # noqa: E731
            a = sorted(get(urls[1], "/prometheus/api/v1/series", **{"match[]": match})["data"], key=key)
            b = sorted(get(prom_url, "/api/v1/series", **{"match[]": match})["data"], key=key)
            if a == b and b:
                break
            assert time.time() < deadline, f"series of {match}: node {a[:3]}…, prometheus {b[:3]}…"
            time.sleep(0.2)
    panels = [
        'DCGM_FI_DEV_GPU_TEMP{instance=~"$instance", gpu=~"$gpu"}',
        'avg(DCGM_FI_DEV_GPU_TEMP{instance=~"$instance", gpu=~"$gpu"})',
        'DCGM_FI_DEV_POWER_USAGE{instance=~"$instance", gpu=~"$gpu"}',
        'sum(DCGM_FI_DEV_POWER_USAGE{instance=~"$instance", gpu=~"$gpu"})',
        'DCGM_FI_DEV_SM_CLOCK{instance=~"$instance", gpu=~"$gpu"} * 1000000',
        'DCGM_FI_DEV_GPU_UTIL{instance=~"$instance", gpu=~"$gpu"}',
        'DCGM_FI_DEV_FB_USED{instance=~"$instance", gpu=~"$gpu"}',
        'DCGM_FI_PROF_PIPE_TENSOR_ACTIVE{instance=~"$instance", gpu=~"$gpu"}',
    ]
    if len(sys.argv) > 3:
        board = json.load(open(sys.argv[3]))
        panels = [t["expr"] for p in board["panels"] for t in p.get("targets", []) if t.get("expr")]
    queries = [q.replace("$instance", variables["instance"]).replace("$gpu", variables["gpu"]) for q in panels]
    queries += [
        'avg by (namespace) (DCGM_FI_DEV_GPU_UTIL)',
        'sum by (pod) (DCGM_FI_DEV_POWER_USAGE)',
        'count by (namespace, pod, container) (DCGM_FI_DEV_GPU_TEMP)',
        'DCGM_FI_DEV_GPU_TEMP{pod!=""}',
        'DCGM_FI_DEV_GPU_UTIL{namespace="ml", gpu="0"}',
        'max by (pod) (max_over_time(DCGM_FI_DEV_GPU_UTIL{namespace="batch"}[3s]))',
        'sum by (namespace) (rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[4s]))',
        'rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[10s])',
        'sum by (instance) (increase(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[15s]))',
        f'DCGM_FI_DEV_GPU_TEMP{{instance="{targets[0]}", gpu="2"}}',
    ]
    checked = 0
    for q in queries:
        for step in ("1", "5"):
            a = get(urls[1], "/prometheus/api/v1/query_range", query=q, start=begin, end=end, step=step)
            b = get(prom_url, "/api/v1/query_range", query=q, start=begin, end=end, step=step)
            ra = sorted(a["data"]["result"], key=lambda s: json.dumps(s["metric"], sort_keys=True))
            rb = sorted(b["data"]["result"], key=lambda s: json.dumps(s["metric"], sort_keys=True))
            if ra != rb or not rb:
                sys.exit(f"{q} step {step} differs:\nnode {json.dumps(ra)[:800]}\nprom {json.dumps(rb)[:800]}")
            checked += 1
    # Prometheus' own series (up, scrape_*) are not DCGM fields: refused and counted.
    metrics = urllib.request.urlopen(f"{urls[0]}/metrics", timeout=10).read().decode()
    refused = [l for l in metrics.splitlines() if l.startswith("telemetry_remote_write_refused_series_total")]
    assert any('reason="not_dcgm"' in l and float(l.split()[-1]) > 0 for l in refused), refused
    assert not get(urls[1], "/prometheus/api/v1/query", query="up", time=end)["data"]["result"]
    print(f"remote write: {samples} samples from Prometheus 2.42 into 3 nodes; "
          f"{checked} dashboard and counter answers identical to Prometheus'")
finally:
    if prom:
        prom.terminate()
        prom.wait()
    for p in procs:
        p.terminate()
        p.wait()
    for e in exporters:
        e.shutdown()
