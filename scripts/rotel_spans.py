#!/usr/bin/env python3
"""Checks spans that rotel-agent received (its `--debug-log traces --debug-log-verbosity
detailed` output) from two telemetry nodes: node-a streamed, node-b owns partitions.

Asserts, per the product's tracing contract:
- a broker.append span on node-b whose parent is a streamer.append span on node-a, same trace;
- a collector.consume span on node-b whose parent is a streamer.batch span on node-a, same trace;
- an http.request on node-a with a scatter.call child whose peer.query child runs on node-b.
Usage: rotel_spans.py ROTEL_OUTPUT"""
import re
import sys


def parse(text):
    spans, node, cur = [], None, None
    for line in text.splitlines():
        m = re.search(r"-> service\.instance\.id: Str\((.*)\)", line)
        if m:
            node = m.group(1)
            continue
        if line.startswith("Span #"):
            cur = {"node": node}
            spans.append(cur)
            continue
        if cur is None:
            continue
        for key, field in (("Trace ID", "trace"), ("Parent ID", "parent"), ("ID", "id"), ("Name", "name")):
            m = re.match(r"\s+" + re.escape(key) + r"\s+:\s*(\S*)\s*$", line)
            if m and field not in cur:
                cur[field] = m.group(1)
    return spans


def main():
    spans = parse(open(sys.argv[1], encoding="utf-8", errors="replace").read())
    by_id = {s.get("id"): s for s in spans}

    def child_of(name, node, parent_name, parent_node):
        for s in spans:
            if s.get("name") != name or s["node"] != node:
                continue
            p = by_id.get(s.get("parent"))
            if p and p.get("name") == parent_name and p["node"] == parent_node and p["trace"] == s["trace"]:
                return s
        return None

    nodes = sorted({s["node"] for s in spans if s["node"]})
    print(f"rotel received {len(spans)} spans from {nodes}")
    problems = []
    if not child_of("broker.append", "node-b", "streamer.append", "node-a"):
        problems.append("no broker.append on node-b under a streamer.append on node-a")
    if not child_of("collector.consume", "node-b", "streamer.batch", "node-a"):
        problems.append("no collector.consume on node-b under a streamer.batch on node-a")
    calls = [s for s in spans if s.get("name") == "scatter.call" and s["node"] == "node-a"
             and by_id.get(s.get("parent"), {}).get("name") == "http.request"]
    if not calls:
        problems.append("no scatter.call under an http.request on node-a")
    elif not any(q.get("name") == "peer.query" and q["node"] == "node-b" and q.get("parent") == c["id"]
                 and q["trace"] == c["trace"] for c in calls for q in spans):
        problems.append("no peer.query on node-b under a scatter.call on node-a")
    for p in problems:
        print("FAIL:", p)
    if not problems:
        print("spans link across the nodes: ingest and query traces are whole")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
