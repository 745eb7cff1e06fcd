"""Bulk ingest side by side: `telemetry-node import` into one node against VictoriaMetrics'
`/api/v1/import/prometheus`, on the same generated samples, in one run.

Generates a `gen-csv` file, writes the same samples as Prometheus text with timestamps for
VictoriaMetrics, then alternates (ours, VM) RUNS times, each into a fresh data directory, and
prints samples/s and the server's CPU seconds per million samples (from /proc, user + system).
A benchmark, not a test: the figures go in the README and the issue notes.
Usage: python3 ingest-compare.py NODE_BINARY WORKDIR [HOSTS] [SCRAPES] [RUNS]
Needs Debian's victoria-metrics (apt-get install victoria-metrics).
"""
import csv
import os
import socket
import subprocess
import sys
import time
import urllib.request

binary, work = sys.argv[1], sys.argv[2]
hosts, scrapes, runs = (int(a) for a in (sys.argv[3:] + ["23", "1000", "2"])[:3])
tick = os.sysconf("SC_CLK_TCK")


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


csv_path, prom_path = f"{work}/in.csv", f"{work}/in.prom"
subprocess.run([binary, "gen-csv", "--hosts", str(hosts), "--scrapes", str(scrapes), "-o", csv_path],
               check=True, stderr=subprocess.DEVNULL)
samples = 0
with open(csv_path) as f, open(prom_path, "w") as out:
    for r in csv.DictReader(f):
        t = int(time.mktime(time.strptime(r["timestamp"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone) * 1000
        out.write(f'{r["metric_name"]}{{UUID="{r["uuid"]}",gpu="{r["gpu_id"]}",device="{r["device"]}",'
                  f'modelName="{r["modelName"]}",Hostname="{r["Hostname"]}"}} {r["value"]} {t}\n')
        samples += 1
print(f"{samples} samples; CSV {os.path.getsize(csv_path)} bytes, Prometheus text {os.path.getsize(prom_path)} bytes")


def ours(i):
    p = subprocess.Popen([binary, "--data-dir", f"{work}/node{i}", "--http-addr", "127.0.0.1:0", "--no-stream"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    url = p.stdout.readline().strip().removeprefix("listening on ")
    c0, t0 = cpu(p.pid), time.perf_counter()
    subprocess.run([binary, "import", csv_path, "--url", url], check=True, stdout=subprocess.DEVNULL)
    secs, c = time.perf_counter() - t0, cpu(p.pid) - c0
    p.terminate()
    p.wait()
    return secs, c


def vm(i):
    port_ = port()
    p = subprocess.Popen(["victoria-metrics", f"-storageDataPath={work}/vm{i}", f"-httpListenAddr=127.0.0.1:{port_}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port_}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1).read()
            break
        except OSError:
            time.sleep(0.1)
    c0, t0 = cpu(p.pid), time.perf_counter()
    with open(prom_path, "rb") as f:
        urllib.request.urlopen(urllib.request.Request(f"{url}/api/v1/import/prometheus", data=f), timeout=600).read()
    # Imported samples become searchable after a flush; VM's own import answer is the figure.
    secs, c = time.perf_counter() - t0, cpu(p.pid) - c0
    p.terminate()
    p.wait()
    return secs, c


for i in range(runs):
    for name, f in (("telemetry-node import", ours), ("VictoriaMetrics import/prometheus", vm)):
        secs, c = f(i)
        print(f"{name}: {samples / secs / 1e6:.2f} M samples/s, {c / samples * 1e6:.2f} CPU-s per M (server)")
