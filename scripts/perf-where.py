#!/usr/bin/env python3
"""Where a profile's time goes, from `perf script` output with call stacks.

Record and dump a node's profile (DWARF stacks: our release builds keep debug
info but not frame pointers):

    perf record -F 1000 --call-graph dwarf,32768 -p PID -o perf.data -- sleep 3
    perf script -i perf.data -F ip,sym > perf.txt

Then:

    scripts/perf-where.py perf.txt inside 'KvVnode::merge_doc$'
        share of samples with a frame matching the pattern, split by the frame
        it called next (the outermost match counts) and by leaf function
    scripts/perf-where.py perf.txt callers 'memcpy|memmove' [DEPTH]
        for samples whose leaf matches, the chain of DEPTH callers above it
        (library and allocator frames skipped)

Patterns are Python regular expressions over demangled names, " (inlined)"
removed. Percentages are of all samples in the file.
"""

import collections
import re
import sys

# Frames that say nothing about our code: the runtime, std, the allocator.
GENERIC = re.compile(
    r"^(<?(tokio|std|core|alloc|futures\w*)::|<alloc::boxed|__memcpy|__memmove|mi_|_mi_)"
)


def samples(path):
    """Each sample's frames, leaf first."""
    out, cur = [], []
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                if cur:
                    out.append(cur)
                    cur = []
                continue
            parts = line.split(" ", 1)
            if len(parts) == 2:
                cur.append(re.sub(r" \(inlined\)$", "", parts[1]))
    if cur:
        out.append(cur)
    return out


def pct(n, total):
    return f"{100 * n / total:6.2f}%"


def inside(all_samples, pattern, rows=25):
    rx = re.compile(pattern)
    callees, leaves, hits = collections.Counter(), collections.Counter(), 0
    for s in all_samples:
        at = [i for i, f in enumerate(s) if rx.search(f)]
        if not at:
            continue
        hits += 1
        j = max(at) - 1
        while j >= 0 and GENERIC.search(s[j]):
            j -= 1
        callees[s[j] if j >= 0 else "(itself)"] += 1
        leaves[s[0]] += 1
    total = len(all_samples)
    print(f"{pct(hits, total)} of {total} samples have a frame matching {pattern!r}")
    print("-- the frame it called next:")
    for name, n in callees.most_common(rows):
        print(f"{pct(n, total)}  {name[:150]}")
    print("-- leaf functions:")
    for name, n in leaves.most_common(rows):
        print(f"{pct(n, total)}  {name[:150]}")


def callers(all_samples, pattern, depth=3, rows=25):
    rx = re.compile(pattern)
    chains = collections.Counter()
    for s in all_samples:
        if not rx.search(s[0]):
            continue
        chain = [f for f in s[1:] if not GENERIC.search(f)][:depth]
        chains[" <- ".join(f[:70] for f in chain)] += 1
    total = len(all_samples)
    for chain, n in chains.most_common(rows):
        print(f"{pct(n, total)}  {chain}")


def main(argv):
    if len(argv) < 4 or argv[2] not in ("inside", "callers"):
        sys.exit(__doc__)
    all_samples = samples(argv[1])
    if not all_samples:
        sys.exit(f"{argv[1]}: no samples (was it made with `perf script -F ip,sym`?)")
    if argv[2] == "inside":
        inside(all_samples, argv[3])
    else:
        callers(all_samples, argv[3], int(argv[4]) if len(argv) > 4 else 3)


if __name__ == "__main__":
    try:
        main(sys.argv)
    except BrokenPipeError:
        pass
