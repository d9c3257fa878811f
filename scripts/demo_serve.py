#!/usr/bin/env python3
"""The server section of `make demo`: a session reads Moby Dick over HTTP, the server is killed
with SIGKILL and restarted on the same database, and the session answers as before without
re-reading. Standard library only (the client knows nothing of longctx's code).

    scripts/demo_serve.py [--longctx build/longctx] [--model models/megalodon-tiny] [--bytes 131072]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request


def start(longctx, model, db):
    p = subprocess.Popen([longctx, "serve", "--model", model, "--port", "0", "--db", db],
                         stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if not line.startswith("listening on "):
        sys.exit("the server did not start: " + line)
    return p, line[len("listening on "):]


def call(url, method="GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--longctx", default="build/longctx")
    ap.add_argument("--model", default="models/megalodon-tiny")
    ap.add_argument("--bytes", type=int, default=131072)
    a = ap.parse_args()
    book = ""
    k = 1
    while len(book) < a.bytes and os.path.exists("data/moby-dick/chapter_%d.txt" % k):
        book += open("data/moby-dick/chapter_%d.txt" % k, encoding="utf-8").read() + "\n"
        k += 1
    book = book[:a.bytes]
    db = os.path.join(tempfile.mkdtemp(prefix="longctx-demo-"), "sessions.db")
    server, url = start(a.longctx, a.model, db)
    print("server: %s (pid %d), sessions in %s" % (url, server.pid, db))
    sid = call(url + "/v1/sessions", "POST", {})["id"]
    t0 = time.time()
    piece = 16384  # one line of progress every few seconds
    for at in range(0, len(book), piece):
        s = call(url + "/v1/sessions/%s/append" % sid, "POST", {"text": book[at:at + piece]})
        print("  read %7d tokens of Moby Dick  state %d bytes  %.1fs" % (s["tokens"], s["state_bytes"], time.time() - t0),
              flush=True)
    ask = {"session": sid, "prompt": "\n\nCHAPTER", "max_tokens": 60, "temperature": 0.7, "seed": 1}
    t1 = time.time()
    before = call(url + "/v1/completions", "POST", ask)["choices"][0]["text"]
    print("the session continues (%.2fs, nothing re-read):%s" % (time.time() - t1, json.dumps(before)))
    server.send_signal(signal.SIGKILL)
    server.wait()
    print("server killed with SIGKILL; restarting on the same database")
    server, url = start(a.longctx, a.model, db)
    s = call(url + "/v1/sessions/" + sid)
    t1 = time.time()
    after = call(url + "/v1/completions", "POST", ask)["choices"][0]["text"]
    print("after the restart the session holds %d tokens in %d bytes; the same request (%.2fs):%s"
          % (s["tokens"], s["state_bytes"], time.time() - t1, json.dumps(after)))
    print("identical to the answer before the kill: %s" % ("yes" if after == before else "NO"))
    server.send_signal(signal.SIGTERM)
    server.wait()
    return 0 if after == before else 1


if __name__ == "__main__":
    sys.exit(main())
