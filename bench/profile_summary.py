#!/usr/bin/env python3
"""Sums each op's own time (its duration less that of the ops it called) in a Chrome trace that
libtorch's profiler wrote (bench_stream --profile DIR), and prints the top ops with their share.

    bench/profile_summary.py DIR/sliding_window-16384.trace [--top 20]
"""
import argparse
import collections
import json


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--top", type=int, default=20)
    a = ap.parse_args()
    with open(a.trace) as f:
        text = f.read().rstrip().rstrip(",")
    if not text.endswith("]"):
        text += "]"
    events = [e for e in json.loads(text) if e.get("ph") == "X"]
    own = collections.Counter()
    calls = collections.Counter()
    by_tid = collections.defaultdict(list)
    for e in events:
        by_tid[e.get("tid", 0)].append(e)
    total = 0.0
    for evs in by_tid.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, name, child time]
        def pop():
            end, name, child, dur = stack.pop()
            own[name] += dur - child
            if stack:
                stack[-1][2] += dur
        for e in evs:
            while stack and e["ts"] >= stack[-1][0]:
                pop()
            if not stack:
                total += e["dur"]
            stack.append([e["ts"] + e["dur"], e["name"], 0.0, e["dur"]])
            calls[e["name"]] += 1
        while stack:
            pop()
    print("%-40s %10s %8s %7s" % ("op", "own ms", "calls", "share"))
    for name, t in own.most_common(a.top):
        print("%-40s %10.1f %8d %6.1f%%" % (name, t / 1000, calls[name], 100 * t / max(total, 1e-9)))
    print("%-40s %10.1f" % ("all top-level ops", total / 1000))


if __name__ == "__main__":
    main()
