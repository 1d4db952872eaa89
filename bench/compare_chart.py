#!/usr/bin/env python3
"""Draws bench/compare.py's results (its JSON file) as a PNG: rows/s per tool per workload,
and commit → record latency p50/p99 per tool and rate.  Needs matplotlib.

    python3 bench/compare_chart.py build/compare-results.json docs/compare.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

TOOLS = ["pgfanout_kafka", "pgfanout_null", "debezium", "pg_recvlogical"]
LABEL = {"pgfanout_kafka": "pgfanout → Kafka", "pgfanout_null": "pgfanout → null",
         "debezium": "Debezium", "pg_recvlogical": "pg_recvlogical"}
COLOR = {"pgfanout_kafka": "#1f77b4", "pgfanout_null": "#9ecae1", "debezium": "#d62728",
         "pg_recvlogical": "#7f7f7f"}


def main(src, dst):
    with open(src) as f:
        res = json.load(f)
    thr, lat = res.get("throughput") or [], res.get("latency") or []
    # The librdkafka floor's latency is produce → ack, not commit → record: in the text only.
    lat = [r for r in lat if r["tool"] in LABEL]
    panels = (1 if thr else 0) + (1 if lat else 0)
    if not panels:
        sys.exit("compare_chart: no results to draw")
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4.6), squeeze=False)
    axes = list(axes[0])
    if thr:
        ax = axes.pop(0)
        width = 0.8 / len(TOOLS)
        for i, tool in enumerate(TOOLS):
            xs = [w + (i - (len(TOOLS) - 1) / 2) * width for w in range(len(thr))]
            ys = [s["tools"][tool]["rate"] for s in thr]
            bars = ax.bar(xs, ys, width, label=LABEL[tool], color=COLOR[tool])
            ax.bar_label(bars, labels=[f"{y / 1000:.0f}k" for y in ys], fontsize=7)
        ax.set_xticks(range(len(thr)))
        ax.set_xticklabels([f"({s['key']}) {s['title']}\n{s['rows']:,} changes" for s in thr],
                           fontsize=8)
        ax.set_ylabel("row changes / s (spawn to done)")
        ax.set_title("Throughput, same WAL, one tool at a time")
        ax.legend(fontsize=8)
    if lat:
        ax = axes.pop(0)
        groups = [(r["tool"], r["rate"]) for r in lat]
        xs = range(len(groups))
        p50 = [r["p50"] or 0 for r in lat]
        p99 = [r["p99"] or 0 for r in lat]
        b1 = ax.bar([x - 0.2 for x in xs], p50, 0.4, label="p50",
                    color=[COLOR[t] for t, _ in groups], alpha=0.55)
        b2 = ax.bar([x + 0.2 for x in xs], p99, 0.4, label="p99",
                    color=[COLOR[t] for t, _ in groups])
        ax.bar_label(b1, labels=[f"{v:.0f}" for v in p50], fontsize=7)
        ax.bar_label(b2, labels=[f"{v:.0f}" for v in p99], fontsize=7)
        ax.set_xticks(list(xs))
        ax.set_xticklabels([f"{LABEL[t]}\n{r:,} tps" for t, r in groups], fontsize=8)
        ax.set_ylabel("commit → record in Kafka, ms")
        ax.set_title("Latency (light bar p50, dark bar p99)")
        ax.set_yscale("log")
    v = res.get("versions", {})
    a = res.get("args", {})
    fig.suptitle(f"pgfanout vs Debezium {v.get('debezium', '?')} vs pg_recvlogical — "
                 f"{v.get('date', '')}, {v.get('cpus', '?')} CPUs, median of "
                 f"{a.get('repeat', '?')}, pgfanout {v.get('pgfanout', '')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)
    print(f"compare_chart: {dst}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: compare_chart.py RESULTS.json OUT.png")
    main(sys.argv[1], sys.argv[2])
