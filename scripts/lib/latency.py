"""Latency figures from colony-bench JSON reports, for the rebalance scripts.

    latency.py one FILE.json   -> "p50_us p99_us ok" of that run
    latency.py steps DIR       -> "median_p50_us worst_p99_us ok" over DIR/during*.json
                                  ("? ? 0" when there is none)
"""
import glob
import json
import statistics
import sys


def total(path):
    return json.load(open(path))["steps"][-1]["total"]


def main():
    mode, arg = sys.argv[1], sys.argv[2]
    if mode == "one":
        t = total(arg)
        print(t["latency_us"]["p50"], t["latency_us"]["p99"], t["ok"])
        return
    steps = [total(f) for f in sorted(glob.glob(arg + "/during*.json"))]
    if not steps:
        print("? ? 0")
        return
    print(
        statistics.median(t["latency_us"]["p50"] for t in steps),
        max(t["latency_us"]["p99"] for t in steps),
        sum(t["ok"] for t in steps),
    )


main()
