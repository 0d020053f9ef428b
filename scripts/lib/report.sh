# shellcheck shell=bash
# The markdown report of scripts/bench.sh, built from colony-bench's JSON
# reports and the figures in metrics.txt ("KEY VALUE" lines). Sourced.

# write_report DIR: prints the report for the results in DIR.
write_report() {
    BENCH_N=$N BENCH_RUNS=$RUNS BENCH_CLIENTS=$CLIENTS BENCH_KEYSPACE=$KEYSPACE \
        BENCH_DURATION=$DURATION BENCH_PIPELINES=$PIPELINES BENCH_WORKLOADS=$WORKLOADS \
        BENCH_TARGETS=$TARGETS BENCH_MEM_KEYS=$MEM_KEYS BENCH_VALUE_SIZE=$VALUE_SIZE \
        BENCH_REDIS_DURABILITY=$REDIS_DURABILITY_TEXT BENCH_COLONY_FSYNC=$COLONY_FSYNC \
        BENCH_SKIP_MEMORY=$SKIP_MEMORY BENCH_HALF_WORKLOAD=$HALF_WORKLOAD BENCH_HALF_REST=$HALF_REST \
        python3 - "$1" <<'PY'
import glob, json, os, re, statistics, sys

d = sys.argv[1]
env = lambda k: os.environ["BENCH_" + k]
N, RUNS, CLIENTS = int(env("N")), int(env("RUNS")), int(env("CLIENTS"))
TARGETS = env("TARGETS").split()
PIPELINES = env("PIPELINES").split()
WORKLOADS = [w.split(":", 1) for w in env("WORKLOADS").split()]
MEM_KEYS, VALUE = int(env("MEM_KEYS")), int(env("VALUE_SIZE"))
MIX = {
    "a": "50% GET, 50% SET", "b": "95% GET, 5% SET", "c": "100% GET",
    "incr": "100% INCR", "sets": "50% SADD, 50% SISMEMBER",
    "hashes": "50% HSET, 50% HGET", "set": "100% SET", "get": "100% GET",
}

metrics = {}
with open(os.path.join(d, "metrics.txt")) as f:
    for line in f:
        key, _, value = line.rstrip("\n").partition(" ")
        metrics.setdefault(key, []).append(value)
one = lambda k, default="n/a": metrics.get(k, [default])[0]

# (target, workload, dist, pipeline) -> [run summaries]
runs = {}
pattern = re.compile(r"tp-(\w+)-(\w+)-(\w+)-p(\d+)-r(\d+)\.json$")
for path in sorted(glob.glob(os.path.join(d, "tp-*.json"))):
    m = pattern.search(path)
    if not m:
        continue
    t, w, dist, p, r = m.groups()
    with open(path) as f:
        rep = json.load(f)
    step = rep["steps"][0] if rep["steps"] else None
    if step is None:
        continue
    load = rep.get("load") or {"total": {"errors": 0, "error_kinds": {}}, "hit_duration_cap": False}
    kinds = dict(step["total"]["error_kinds"])
    for k, n in load["total"]["error_kinds"].items():
        kinds["load " + k] = kinds.get("load " + k, 0) + n
    runs.setdefault((t, w, dist, p), []).append({
        "ops": step["total"]["ops_per_sec"],
        "p50": step["total"]["latency_us"]["p50"],
        "p99": step["total"]["latency_us"]["p99"],
        "errors": step["total"]["errors"] + load["total"]["errors"],
        "kinds": kinds,
        "capped": step["hit_duration_cap"] or load["hit_duration_cap"],
        "redirects": step["redirects"],
        "secs": step["elapsed_secs"],
    })

def summary(t, w, dist, p):
    rs = runs.get((t, w, dist, p))
    if not rs:
        return None
    ordered = sorted(rs, key=lambda r: r["ops"])
    mid = ordered[(len(ordered) - 1) // 2]
    return {"ops": statistics.median(r["ops"] for r in rs), "p50": mid["p50"],
            "p99": mid["p99"], "n": len(rs)}

def ops(s):
    return f"{s['ops']:,.0f}" if s else "n/a"

def ratio(a, b):
    return f"{a['ops'] / b['ops']:.2f}" if a and b and b["ops"] else "n/a"

def lat(s):
    return f"{s['p50']:,} / {s['p99']:,}" if s else "n/a"

def ms(us_values):
    vals = [int(v) for v in us_values if v]
    if not vals:
        return "n/a"
    med = statistics.median(vals) / 1000
    if len(vals) == 1:
        return f"{med:,.1f}"
    return f"{med:,.1f} ({', '.join(f'{v / 1000:,.1f}' for v in vals)})"

col = {"redis": "Redis", "cluster": "Redis Cluster", "colony": "Colony (1 node)",
       "colony3": "Colony (3 nodes)"}
SHOWN = ("redis", "cluster", "colony", "colony3")
out = []
w = out.append
w("# Colony beside Redis: colony-bench\n")
w(f"{one('machine.date')}, colony {one('machine.colony')}; "
  f"the whole run took {int(one('elapsed_s', '0')) / 60:.1f} min.\n")
w("## Machine\n")
w("| | |\n|---|---|")
for key, label in [("nproc", "cores (nproc)"), ("cpu", "CPU"), ("memory", "memory"),
                   ("kernel", "kernel"), ("rustc", "rustc"), ("redis", "redis-server")]:
    w(f"| {label} | {one('machine.' + key)} |")
w(f"| load average (1, 5, 15 min) at start / end | {one('machine.loadavg_start')} / "
  f"{one('machine.loadavg_end')} |")
w("\nServers and load generator share these cores; everything runs over 127.0.0.1. "
  "The load average at the start shows whether anything else was running.\n")
w("## Command\n")
w(f"```sh\n{one('command')}\n```\n")
w("Each measured run is one colony-bench process:\n")
w(f"```sh\ncolony-bench --host 127.0.0.1 -p PORT [--cluster] | --addr N1,N2,N3  --workload W --dist D "
  f"--keyspace {env('KEYSPACE')} --clients {CLIENTS} --pipeline P "
  f"--requests {N} --duration {env('DURATION')} --json FILE --quiet\n```\n")
w(f"As in YCSB, each workload's keyspace is written once per target first (the same "
  f"command with `--load --requests 0`); then, for each pipeline depth, one unrecorded "
  f"warm-up run per target, then the measured runs: {N:,} operations each (closed "
  f"loop, {CLIENTS} clients, values of {VALUE} B), or fewer if {env('DURATION')} s "
  f"pass first. Throughput is the median of {RUNS} "
  "run(s); latency (µs) is that of the run with the median throughput. Runs are "
  "interleaved: run 1 on every target, then run 2, and so on. Against the Redis "
  f"Cluster each client keeps one connection per master (so {CLIENTS} clients are "
  f"{3 * CLIENTS} connections), routes by slot and follows MOVED/ASK; operations "
  "in flight are the same as for the others. Against the Colony cluster, "
  "`--addr` names the three nodes' RESP ports and client i connects to node "
  f"i mod 3 ({CLIENTS} connections in all, spread evenly); whichever node a "
  "request reaches coordinates it with the key's replicas.\n")
w("## Targets and durability\n")
w("| target | processes | durability |\n|---|---|---|")
rd = env("REDIS_DURABILITY")
w(f"| Redis | 1 redis-server | `{rd}`: append-only file, fsync every second, no RDB snapshots |")
w(f"| Redis Cluster | 6 redis-server: 3 masters + 3 replicas (`--cluster-replicas 1`) | "
  f"`{rd} --cluster-enabled yes` on every node; replication is asynchronous |")
w(f"| Colony (1 node) | 1 colony | `--fsync {env('COLONY_FSYNC')}` (interval 1000 ms): "
  "each batch is written to the OS before its reply, fsynced every second |")
w(f"| Colony (3 nodes) | 3 colony, one `--cluster-secret`, nodes 2 and 3 `--join` node 1; "
  f"default bucket `{one('colony3.bucket')}` (as `colony admin bucket get default` "
  "shows it), so each key is on all three nodes | "
  f"`--fsync {env('COLONY_FSYNC')}` on every node; a write is acknowledged once 2 of "
  "its 3 replicas have it (in the OS), a read merges the first 2 of 3 answers |\n")

w("## Throughput (ops/s)\n")
head = ["workload", "mix", "key choice", "pipeline"] + [col[t] for t in SHOWN]
head += ["1 node / Redis", "1 node / Redis Cluster", "3 nodes / Redis",
         "3 nodes / Redis Cluster"]
w("| " + " | ".join(head) + " |")
w("|" + "---|" * len(head))
for wl, dist in WORKLOADS:
    for p in PIPELINES:
        s = {t: summary(t, wl, dist, p) for t in SHOWN}
        cells = [wl, MIX.get(wl, wl), dist, p] + [ops(s[t]) for t in SHOWN]
        cells += [ratio(s[c], s[r]) for c in ("colony", "colony3") for r in ("redis", "cluster")]
        w("| " + " | ".join(cells) + " |")
w("\nRatios are Colony's throughput over Redis's (1 node: the single Colony node; "
  "3 nodes: the Colony cluster).")

w("\n## Latency (µs): p50 / p99\n")
head = ["workload", "key choice", "pipeline"] + [col[t] for t in SHOWN]
w("| " + " | ".join(head) + " |")
w("|" + "---|" * len(head))
for wl, dist in WORKLOADS:
    for p in PIPELINES:
        s = {t: summary(t, wl, dist, p) for t in SHOWN}
        w("| " + " | ".join([wl, dist, p] + [lat(s[t]) for t in SHOWN]) + " |")

hw, hdist = env("HALF_WORKLOAD").split(":", 1)
w(f"\n## Latency at half of peak throughput ({hw}, {hdist}, open loop)\n")
w(f"Each target gets a fixed rate of half its peak, the median pipeline-1 throughput "
  f"of workload {hw} above, from {CLIENTS} clients; latency counts from each "
  "operation's scheduled send time, so a stall shows in full (no coordinated "
  "omission). Before each target's run the script calls `sync` and rests "
  f"{env('HALF_REST')} s, so earlier runs' writeback stays out of it. "
  "Target of the benchmark issue: p99 under 2 ms.\n")
w("| target | peak (ops/s) | offered (ops/s) | achieved (ops/s) | p50 (µs) | p99 (µs) | p99.9 (µs) | errors | p99 under 2 ms |")
w("|---|---|---|---|---|---|---|---|---|")
for t in SHOWN:
    peak, rate = one(f"half.{t}.peak", None), one(f"half.{t}.rate", None)
    if peak is None:
        continue
    try:
        with open(os.path.join(d, f"half-{t}.json")) as f:
            step = json.load(f)["steps"][0]
    except (OSError, KeyError, IndexError, ValueError):
        w(f"| {col[t]} | {int(peak):,} | {int(rate):,} | run failed | | | | | |")
        continue
    l = step["total"]["latency_us"]
    w(f"| {col[t]} | {int(peak):,} | {int(rate):,} | {step['total']['ops_per_sec']:,.0f} | "
      f"{l['p50']:,} | {l['p99']:,} | {l['p999']:,} | {step['total']['errors']} | "
      f"{'yes' if l['p99'] < 2000 else 'no'} |")

w("\n## Memory, start-up, recovery\n")
w("Start-up and restart times are from the exec of the server to its first PONG "
  "(and to the first GET that returns a loaded value), polled every millisecond; "
  "the median, then every measurement in brackets. These rows are measured on "
  "one Colony node only; the 3-node cluster is not part of them.\n")
w("| measure | Redis | Colony (1 node) | Colony / Redis |\n|---|---|---|---|")

def row(label, r, c, fmt=lambda v: v, ratio_of=None):
    q = "n/a"
    if ratio_of:
        try:
            q = f"{ratio_of(c) / ratio_of(r):.2f}"
        except (TypeError, ValueError, ZeroDivisionError):
            pass
    w(f"| {label} | {fmt(r)} | {fmt(c)} | {q} |")

def num(v):
    return float(v) if v not in (None, "", "n/a") else None

def load_rate(kind):
    try:
        with open(os.path.join(d, f"mem-{kind}.json")) as f:
            return json.load(f)["load"]["total"]["ops_per_sec"]
    except (OSError, KeyError, TypeError, ValueError):
        return None

startup = lambda k: metrics.get("startup." + k, [])
row("start-up of an empty server (ms)", startup("redis"), startup("colony"), ms,
    lambda v: statistics.median(int(x) for x in v))
if env("SKIP_MEMORY") != "1":
    mib = lambda v: f"{float(v) / 1024:,.1f}" if num(v) is not None else "n/a"
    m = lambda k, kind: one(f"mem.{kind}.{k}")
    row(f"RSS after loading {MEM_KEYS:,} distinct {VALUE} B values (MiB)",
        m("rss_kib", "redis"), m("rss_kib", "colony"), mib, float)
    row("DBSIZE after the load", m("dbsize", "redis"), m("dbsize", "colony"))
    row("on disk after the load (MiB): AOF dir / data dir", m("disk_kib", "redis"),
        m("disk_kib", "colony"), mib, float)
    row("load rate (SET, 50 clients, pipeline 16, ops/s)", load_rate("redis"),
        load_rate("colony"), lambda v: f"{v:,.0f}" if v else "n/a", float)
    rec = lambda k, kind: metrics.get(f"recovery.{kind}.{k}", [])
    med = lambda v: statistics.median(int(x) for x in v)
    row("restart after kill -9 with those keys: exec → first PONG (ms)",
        rec("pong", "redis"), rec("pong", "colony"), ms, med)
    row("restart after kill -9: exec → first GET of a loaded key (ms)",
        rec("get", "redis"), rec("get", "colony"), ms, med)
    row("DBSIZE after each restart", ", ".join(rec("dbsize", "redis")) or "n/a",
        ", ".join(rec("dbsize", "colony")) or "n/a")
    w(f"\nThe key read after restarts is the last one loaded (`key:{MEM_KEYS - 1:012d}`). "
      "Redis with appendonly replays its AOF (an RDB preamble from automatic "
      "rewrites, then the tail) and answers `-LOADING` until done; an AOF rewrite "
      "is allowed to finish before each kill -9.")

notes = []
for (t, wl, dist, p), rs in sorted(runs.items()):
    errs = sum(r["errors"] for r in rs)
    if errs:
        kinds = {}
        for r in rs:
            for k, n in r["kinds"].items():
                kinds[k] = kinds.get(k, 0) + n
        notes.append(f"{col.get(t, t)}, {wl} ({dist}), pipeline {p}: {errs} errors over "
                     f"{len(rs)} run(s): " + ", ".join(f"{k}={n}" for k, n in sorted(kinds.items())))
    capped = sum(r["capped"] for r in rs)
    if capped:
        notes.append(f"{col.get(t, t)}, {wl} ({dist}), pipeline {p}: {capped} run(s) "
                     f"stopped by --duration before {N:,} operations")
    ordered = sorted(r["ops"] for r in rs)
    mid = statistics.median(ordered)
    if len(rs) > 1 and mid and (ordered[-1] - ordered[0]) / mid > 0.25:
        notes.append(f"{col.get(t, t)}, {wl} ({dist}), pipeline {p}: runs spread "
                     f"{ordered[0]:,.0f} to {ordered[-1]:,.0f} ops/s (runs of "
                     f"{min(r['secs'] for r in rs):.2f} to {max(r['secs'] for r in rs):.2f} s)")
    if len(rs) < RUNS:
        notes.append(f"{col.get(t, t)}, {wl} ({dist}), pipeline {p}: only {len(rs)} of "
                     f"{RUNS} runs produced a result")
# The loads (one per target and workload, before its runs).
for path in sorted(glob.glob(os.path.join(d, "load-*.json"))):
    m = re.search(r"load-(\w+)-(\w+)-(\w+)\.json$", path)
    if not m:
        continue
    t, wl, dist = m.groups()
    with open(path) as f:
        load = json.load(f).get("load")
    if not load:
        notes.append(f"{col.get(t, t)}, {wl} ({dist}): the load wrote no report")
        continue
    if load["total"]["errors"]:
        notes.append(f"{col.get(t, t)}, {wl} ({dist}): {load['total']['errors']} errors while "
                     "loading: " + ", ".join(f"{k}={n}" for k, n in
                                              sorted(load["total"]["error_kinds"].items())))
    if load["hit_duration_cap"]:
        notes.append(f"{col.get(t, t)}, {wl} ({dist}): the load was stopped by --duration")
redirects = sum(r["redirects"] for (t, *_), rs in runs.items() if t == "cluster" for r in rs)
rewrites = [f"{col[t]} {one('aof_rewrites.' + t)}" for t in ("redis", "cluster") if t in TARGETS]
if rewrites:
    notes.append("AOF rewrites (a fork each; Redis's defaults: at 64 MB and at every "
                 "doubling) since the throughput targets started: " + ", ".join(rewrites) +
                 " (all six nodes together).")
if "cluster" in TARGETS:
    notes.append(f"Redis Cluster: {redirects} MOVED/ASK redirections followed in all (expected 0).")
w("\n## Notes\n")
w("Listed: errors, runs cut short by --duration, and measurements whose fastest "
  "and slowest runs differ by more than 25% of the median (short runs, as at "
  "pipeline 16, are noisy: raise N).\n")
for n in notes or ["No errors; no run was stopped by --duration."]:
    w(f"- {n}")
print("\n".join(out))
PY
}

# splice_report FILE REPORT: replace what lies between the generated-section
# markers of FILE with REPORT, its headings two levels down (the markers
# stay). Fails, changing nothing, if FILE lacks either marker.
splice_report() {
    local file=$1 report=$2
    local begin='<!-- scripts/bench.sh report: begin -->'
    local end='<!-- scripts/bench.sh report: end -->'
    if ! grep -qxF "$begin" "$file" || ! grep -qxF "$end" "$file"; then
        echo "splice_report: $file lacks the markers $begin / $end" >&2
        return 1
    fi
    awk -v b="$begin" -v e="$end" -v r="$report" '
        $0 == b {
            print
            while ((getline line < r) > 0) {
                if (line ~ /^```/) fenced = !fenced
                if (!fenced && line ~ /^#/) line = "##" line
                print line
            }
            skip = 1
            next
        }
        $0 == e { skip = 0 }
        !skip { print }
    ' "$file" >"$file.tmp"
    mv "$file.tmp" "$file"
}
