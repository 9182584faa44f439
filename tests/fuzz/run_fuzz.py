#!/usr/bin/env python3
"""run_fuzz.py - run one libFuzzer target for a while, as a TAP test.

usage: run_fuzz.py FUZZER SEED_DIR

Runs FUZZER for $JM_FUZZ_SECONDS (default 30: the short CI run; docs/
reliability.md says how to run it for hours) on a private copy of the seed
corpus.  A crash, leak or timeout fails the test and leaves the input in
the build directory (artifact_prefix); add it to fixtures/fuzz/<target>/
so that every later build replays it.
"""
import os
import shutil
import subprocess
import sys
import tempfile

fuzzer, seeds = sys.argv[1], sys.argv[2]
secs = int(os.environ.get("JM_FUZZ_SECONDS", "30"))
name = os.path.basename(fuzzer)
work = tempfile.mkdtemp(prefix="jmfuzz.")
try:
    corpus = os.path.join(work, "corpus")
    shutil.copytree(seeds, corpus)
    artifacts = os.path.join(os.path.dirname(fuzzer), name + "-artifacts") + "/"
    os.makedirs(artifacts, exist_ok=True)
    cmd = [fuzzer, corpus, f"-max_total_time={secs}", "-timeout=10", "-rss_limit_mb=2048",
           "-max_len=65536", f"-artifact_prefix={artifacts}", "-print_final_stats=1"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=secs + 600)
    out = p.stdout.decode("utf-8", "replace")
    print("1..1")
    for line in out.splitlines()[-25:]:
        print("# " + line)
    if p.returncode == 0:
        print(f"ok 1 - {name} ran {secs} s without a finding")
    else:
        print(f"not ok 1 - {name} found a crash: see {artifacts}")
    sys.exit(0 if p.returncode == 0 else 1)
finally:
    shutil.rmtree(work, ignore_errors=True)
