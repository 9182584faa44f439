#!/usr/bin/env python3
"""summarize.py - count test cases across meson test logs: "N passed, N failed".

usage: summarize.py TESTLOG.json...

Every registered test speaks TAP, so a case is a TAP "ok"/"not ok" line.  A
test whose process failed although its TAP lines were all "ok" (a crash
after the last case, a sanitizer report at exit) counts one extra failure;
a test that printed no TAP at all counts one case.  A log that is missing
counts as a failure: a build that did not run its tests is not green.
Exit 0 only when nothing failed and something passed.
"""
import json
import re
import sys

OK = re.compile(r"^ok\b")
NOT_OK = re.compile(r"^not ok\b")


def count(path):
    passed = failed = 0
    names = []
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines()
    except OSError:
        print(f"summarize: no test log at {path}", file=sys.stderr)
        return 0, 1, [path]
    for line in lines:
        if not line.strip():
            continue
        t = json.loads(line)
        out = (t.get("stdout") or "").splitlines()
        ok = sum(1 for x in out if OK.match(x))
        bad = sum(1 for x in out if NOT_OK.match(x))
        for x in out:
            if NOT_OK.match(x):
                names.append(f"{t['name']}: {x}")
        process_ok = t.get("result") in ("OK", "EXPECTEDFAIL", "SKIP")
        if ok + bad == 0:
            ok, bad = (1, 0) if process_ok else (0, 1)
        elif not process_ok and bad == 0:
            bad = 1
            names.append(f"{t['name']}: {t.get('result')} (exit {t.get('returncode')})")
        passed += ok
        failed += bad
    return passed, failed, names


def main():
    passed = failed = 0
    for path in sys.argv[1:]:
        p, f, names = count(path)
        passed += p
        failed += f
        for n in names:
            print(f"FAILED {path.split('/')[0]}: {n}")
    print(f"{passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 and passed > 0 else 1)


if __name__ == "__main__":
    main()
