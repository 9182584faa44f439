"""harness.py - the end-to-end test harness (Python 3 standard library only).

Each tests/e2e/test_*.py module defines functions named test_*; run() calls
each in order with a fresh temp directory and prints TAP, so meson counts
every case.  Helpers run the real programs and return (code, stdout, stderr).
"""
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse

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


# --------------------------------------------------------------------------
# Daemon helpers: jmirrord as a real process, its control socket, and polls
# with a deadline for what it does asynchronously.

def mirror_db(root):
    return os.path.join(root, "mirror", "mirror.db")


def sock_path(root):
    return mirror_db(root) + ".sock"


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                   "runtime error:", "SUMMARY: UndefinedBehaviorSanitizer")

_daemons = []  # every Daemon started by the running test (killed after it)


class Control:
    """A client of the control socket: one JSON object per line each way."""

    def __init__(self, path, timeout=10.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(timeout)
        try:
            self.s.connect(path)
        except OSError:
            self.s.close()
            raise
        self.buf = b""

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.s.sendall(data)

    def read(self):
        """The next answer, parsed; None when the daemon closed the socket."""
        while b"\n" not in self.buf:
            try:
                chunk = self.s.recv(65536)
            except ConnectionResetError:  # closed with our bytes unread
                return None
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line.decode("utf-8"))

    def request(self, req):
        if isinstance(req, bytes):
            self.send(req + b"\n")
        else:
            self.send((req if isinstance(req, str) else json.dumps(req)) + "\n")
        ans = self.read()
        assert ans is not None, ("daemon closed the connection", req)
        return ans

    def close(self):
        self.s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def control(root, req, timeout=10.0):
    """One request on a fresh connection."""
    with Control(sock_path(root), timeout) as c:
        return c.request(req)


class Daemon:
    """jmirrord on `root`, stderr captured to a file.  Use as a context
    manager (or rely on run(), which kills what a test left running)."""

    def __init__(self, root, *args, log=None, env=None, binary=None):
        self.root = root
        self.args = [str(a) for a in args]
        self.log = log or os.path.join(os.path.dirname(os.path.abspath(root)),
                                       "jmirrord.%s.log" % os.path.basename(root))
        self.env = env
        self.binary = binary or JMIRRORD
        self.proc = None
        db = mirror_db(root)
        if env and env.get("JMIRROR_MIRROR"):
            db = env["JMIRROR_MIRROR"]
        if "--mirror" in self.args:
            db = self.args[self.args.index("--mirror") + 1]
        self.sock = db + ".sock"

    @property
    def pid(self):
        return self.proc.pid

    def spawn(self):
        e = dict(os.environ)
        e.pop("JMIRROR_ROOT", None)
        e.pop("JMIRROR_MIRROR", None)
        if self.env:
            e.update(self.env)
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen([self.binary, "--root", self.root] + self.args,
                                         stdin=subprocess.DEVNULL, stdout=f, stderr=f,
                                         env=e)
        _daemons.append(self)
        return self

    def start(self, timeout=20.0):
        """Spawn and wait until the socket answers `status`."""
        self.spawn()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=20.0):
        def answers():
            if self.proc.poll() is not None:
                raise AssertionError("jmirrord exited with %s before answering:\n%s"
                                     % (self.proc.returncode, self.log_text()))
            try:
                with Control(self.sock, 2.0) as c:
                    st = c.request({"cmd": "status"})
            except (OSError, ValueError):
                return None
            return st if st.get("ok") and st.get("pid") == self.pid else None
        return wait_until(answers, timeout, "jmirrord to answer on its socket")

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status(self):
        with Control(self.sock) as c:
            return c.request({"cmd": "status"})

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Signal it and reap it: (exit code, seconds it took).  Fails on a
        sanitizer report in its log."""
        t0 = time.monotonic()
        if self.alive():
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("jmirrord did not exit within %.0f s of signal %d:\n%s"
                                 % (timeout, sig, self.log_text()))
        took = time.monotonic() - t0
        self.check_log()
        return code, took

    def kill(self):
        """SIGKILL and reap (no clean-up of any kind happens)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def log_text(self):
        try:
            with open(self.log, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def check_log(self):
        text = self.log_text()
        for mark in SANITIZER_MARKS:
            assert mark not in text, "sanitizer report in jmirrord's log:\n" + text

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *exc):
        if self.alive():
            if exc[0] is None:
                code, _ = self.stop()
                assert code == 0, (code, self.log_text())
            else:
                self.kill()


def kill_leftover_daemons():
    while _daemons:
        _daemons.pop().kill()


def wait_until(pred, timeout, what, interval=0.005):
    """Poll pred() until it returns something true; fail after timeout s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def query(root, sql, args=()):
    """Rows from the mirror, read-only (a fresh connection each time)."""
    uri = "file:%s?mode=ro" % urllib.parse.quote(mirror_db(root))
    con = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def message_count(root, conv=None):
    """Messages in the mirror (of one conversation); None if unreadable."""
    try:
        if conv is None:
            return query(root, "SELECT count(*) FROM messages")[0][0]
        return query(root, "SELECT count(*) FROM messages WHERE conversation_id = ?",
                     (conv,))[0][0]
    except sqlite3.Error:
        return None


def wait_rows(root, n, timeout=30.0, conv=None):
    """Wait until the mirror holds exactly n messages (of conv)."""
    seen = []

    def check():
        c = message_count(root, conv)
        seen[:] = [c]
        return c == n
    try:
        wait_until(check, timeout, "%d messages%s" % (n, " in " + conv if conv else ""))
    except AssertionError as e:
        raise AssertionError("%s (last count: %s)" % (e, seen[0] if seen else None))


def verify(root, *ids, env=None):
    """`jmirror verify --json`: (exit code, parsed answer or None, Result)."""
    r = run_cli("verify", "--json", *ids, root=root, env=env)
    try:
        j = json.loads(r.out) if r.out.strip() else None
    except ValueError:
        j = None
    return r.code, j, r


def verify_clean(root, *ids):
    code, j, r = verify(root, *ids)
    return (code == 0 and j is not None and j["drift"] == 0 and j["behind"] == 0
            and j["ok"] == j["checked"])


def wait_verify_clean(root, timeout=30.0, *ids):
    """Wait until `jmirror verify` says every conversation is ok."""
    try:
        wait_until(lambda: verify_clean(root, *ids), timeout, "a clean verify",
                   interval=0.05)
    except AssertionError as e:
        raise AssertionError("%s; last: %r" % (e, verify(root, *ids)[2]))


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
            kill_leftover_daemons()
            if not os.environ.get("JM_TEST_KEEP"):
                shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if failed else 0)
