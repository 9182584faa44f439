"""harness.py - the end-to-end test harness (Python 3 standard library only).

Each tests/e2e/test_*.py module defines functions named test_*; run() calls
each in order with a fresh temp directory and prints TAP, so meson counts
every case.  Helpers run the real programs and return (code, stdout, stderr).
"""
import os
import shutil
import subprocess
import sys
import tempfile
import traceback

JMIRROR = os.environ.get("JMIRROR", "jmirror")
JMIRRORD = os.environ.get("JMIRRORD", "jmirrord")
FIXTURES = os.environ.get("JM_FIXTURES", os.path.join(os.path.dirname(__file__), "..", "..", "fixtures"))


class Result:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err

    def __repr__(self):
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


def run_cli(*args, root=None, stdin=None, env=None, timeout=120, binary=None):
    """Run jmirror with args; returns Result with text (UTF-8, replace) streams."""
    cmd = [binary or JMIRROR]
    if root is not None:
        cmd += ["--root", root]
    cmd += [str(a) for a in args]
    e = dict(os.environ)
    e.pop("JMIRROR_ROOT", None)
    if env:
        e.update(env)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    p = subprocess.run(cmd, input=data, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=e, timeout=timeout)
    return Result(p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace"))


def read_lines(path):
    with open(path, "rb") as f:
        return f.read().split(b"\n")


def run(module_globals):
    tests = [(n, f) for n, f in module_globals.items() if n.startswith("test_") and callable(f)]
    only = sys.argv[1:]
    if only:
        tests = [t for t in tests if t[0] in only]
    print(f"1..{len(tests)}", flush=True)
    failed = 0
    for i, (name, fn) in enumerate(tests, 1):
        tmp = tempfile.mkdtemp(prefix="jme2e.")
        try:
            fn(tmp)
            print(f"ok {i} - {name}", flush=True)
        except Exception:
            failed += 1
            print(f"not ok {i} - {name}", flush=True)
            for line in traceback.format_exc().splitlines():
                print("# " + line, flush=True)
        finally:
            if not os.environ.get("JM_TEST_KEEP"):
                shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failed else 0)
