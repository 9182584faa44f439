"""crashkit.py - what the crash and fault tests (test_crash.py,
test_faults.py) share: the LD_PRELOAD shim (tests/shim/powerloss.c), the
power-loss model applied to a journal, round counts for CI and nightly runs,
journal files read back as events, and the checks every round ends with.

Round counts: a test runs `rounds(ci, nightly)` rounds: the small number in
CI, the large one when JM_NIGHTLY=1.  JM_SEED fixes the random choices
(kill points, fault points, power-loss cuts) of a run to reproduce it.
"""
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import JMIRROR, mirror_db, run_cli  # noqa: E402

SHIM = os.environ.get("JM_SHIM", "")
NIGHTLY = os.environ.get("JM_NIGHTLY", "") not in ("", "0")


def rounds(ci, nightly):
    return nightly if NIGHTLY else ci


def seed_rng(name):
    """A seeded Random for one test; the seed is printed to reproduce it."""
    seed = int(os.environ.get("JM_SEED", random.randrange(1 << 30)))
    note("%s: seed %d (JM_SEED=%d reproduces it)%s"
         % (name, seed, seed, " [nightly]" if NIGHTLY else ""))
    return random.Random(seed)


def note(text):
    print("# " + text, flush=True)


def skip(reason):
    """The harness has no SKIP: say so in the TAP stream and pass."""
    note("SKIP: " + reason)


def have_shim():
    return bool(SHIM) and os.path.exists(SHIM) and sys.platform.startswith("linux")


def shim_env(shim_dir=None, state=None, fault_dir=None, ctl=None, log=None):
    """The environment that preloads the shim into a jmirror/jmirrord child.

    AddressSanitizer insists on coming first in the library list; with the
    shim preloaded it would refuse to start, so its link-order check is
    turned off (the shim only forwards calls, it allocates nothing ASan
    must see)."""
    e = {"LD_PRELOAD": SHIM}
    asan = os.environ.get("ASAN_OPTIONS", "")
    e["ASAN_OPTIONS"] = (asan + ":" if asan else "") + "verify_asan_link_order=0"
    for k, v in (("JM_SHIM_DIR", shim_dir), ("JM_SHIM_STATE", state),
                 ("JM_FAULT_DIR", fault_dir), ("JM_FAULT_CTL", ctl),
                 ("JM_FAULT_LOG", log)):
        if v is not None:
            e[k] = v
    return e


def set_fault(ctl, word):
    """Switch the shim's fault (read on every call) atomically."""
    tmp = ctl + ".tmp"
    with open(tmp, "w") as f:
        f.write(word + "\n")
    os.replace(tmp, ctl)


def fault_log_lines(log):
    try:
        with open(log) as f:
            return [l.split(" ", 2) for l in f.read().splitlines()]
    except FileNotFoundError:
        return []


# --------------------------------------------------------------------------
# The power-loss model (tests/shim/powerloss.c has the why).

def _state_name(rel, suffix):
    return rel.replace("/", "%2F") + suffix


def synced_size(state, rel):
    try:
        with open(os.path.join(state, _state_name(rel, ".synced"))) as f:
            return int(f.read().strip() or 0)
    except FileNotFoundError:
        return 0


def dirent_durable(state, rel):
    return os.path.exists(os.path.join(state, _state_name(rel, ".dirent")))


def power_loss(root, state, rng, modes=("cut", "prefix", "zeros")):
    """Cut every journal file to what survives a power loss now: its synced
    size, then (by a random mode per file) nothing more, a random prefix of
    the unsynced bytes, or zeros in their place (the size reached the disk,
    the data did not).  A file whose directory entry was never synced is
    gone.  Returns {file name: (size before, size after or None, mode)}."""
    jdir = os.path.join(root, "journal")
    out = {}
    if not os.path.isdir(jdir):
        return out
    journal_durable = dirent_durable(state, "journal")
    for name in sorted(os.listdir(jdir)):
        path = os.path.join(jdir, name)
        rel = "journal/" + name
        size = os.path.getsize(path)
        if not journal_durable or not dirent_durable(state, rel):
            os.unlink(path)
            for suffix in (".synced", ".dirent"):
                try:
                    os.unlink(os.path.join(state, _state_name(rel, suffix)))
                except FileNotFoundError:
                    pass
            out[name] = (size, None, "gone")
            continue
        keep = min(synced_size(state, rel), size)
        mode = rng.choice(modes)
        extra = rng.randint(0, size - keep) if mode != "cut" and size > keep else 0
        with open(path, "r+b") as f:
            if mode == "zeros" and extra:
                f.seek(keep)
                f.write(b"\0" * extra)
            f.truncate(keep + extra)
            f.flush()
            os.fsync(f.fileno())
        out[name] = (size, keep + extra, mode)
    return out


# --------------------------------------------------------------------------
# Reading journals back, and the checks.

def journal_path(root, cid):
    return os.path.join(root, "journal", cid + ".jsonl")


def parse_journal(path):
    """(events, bad, tail): the valid JSON objects of the complete lines in
    order, the bad lines as (line number, byte offset, bytes), and the bytes
    after the last LF."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return [], [], b""
    cut = data.rfind(b"\n") + 1
    events, bad = [], []
    off = 0
    for n, line in enumerate(data[:cut].split(b"\n")[:-1], 1):
        s = line.rstrip(b"\r")
        if s.strip(b" \t") != b"":
            try:
                ev = json.loads(s.decode("utf-8"))
                if not isinstance(ev, dict):
                    raise ValueError
                events.append(ev)
            except ValueError:
                bad.append((n, off, line))
        off += len(line) + 1
    return events, bad, data[cut:]


def ids_in(path):
    return [e.get("id") for e in parse_journal(path)[0] if e.get("type") == "message"]


def query(root, sql, args=(), db=None):
    uri = "file:%s?mode=ro" % urllib.parse.quote(db or mirror_db(root))
    con = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def integrity(root, db=None):
    return query(root, "PRAGMA integrity_check", db=db)


def assert_converges(root, env=None, what="", ids=()):
    """ingest, then: verify clean (of `ids`, or everything), integrity ok,
    no message twice."""
    r = run_cli("ingest", root=root, env=env, timeout=300)
    assert r.code == 0, (what, r)
    r = run_cli("verify", *ids, root=root, env=env, timeout=300)
    assert r.code == 0 and "0 behind, 0 drift" in r.out, (what, r)
    assert integrity(root) == [("ok",)], what
    dup = query(root, "SELECT conversation_id, id, count(*) FROM messages "
                      "GROUP BY 1, 2 HAVING count(*) > 1")
    assert dup == [], (what, dup)


def mirror_ids(root, cid):
    return sorted(r[0] for r in query(
        root, "SELECT id FROM messages WHERE conversation_id = ?", (cid,)))


def spawn(args, root=None, env=None, stdin=None, stdout=subprocess.PIPE):
    cmd = [JMIRROR] + (["--root", root] if root is not None else []) + [str(a) for a in args]
    e = dict(os.environ)
    e.pop("JMIRROR_ROOT", None)
    if env:
        e.update(env)
    return subprocess.Popen(cmd, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                            stdout=stdout, stderr=subprocess.PIPE, env=e)


def kill_at(p, delay, input=None):
    """Wait up to `delay` seconds (the random kill point: real time is the
    point here), feeding `input` to its stdin, then SIGKILL it if still
    running.  (killed, code, out, err)"""
    try:
        out, err = p.communicate(input=input, timeout=delay)
        return False, p.returncode, out, err
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        return True, p.returncode, out, err
    except BrokenPipeError:  # it died before reading all its input
        out, err = p.communicate()
        return False, p.returncode, out, err


def ts(n):
    return "2026-04-%02dT%02d:%02d:%02d.%06dZ" % (
        1 + n // 86400 % 28, n // 3600 % 24, n // 60 % 60, n % 60, n % 1000000)


def message(mid, content, n=0):
    return json.dumps({"type": "message", "ts": ts(n), "id": mid, "role": "user",
                       "content": content}, ensure_ascii=False, separators=(",", ":"))


def timed(fn):
    t0 = time.monotonic()
    r = fn()
    return r, time.monotonic() - t0
