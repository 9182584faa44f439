"""End-to-end tests of `jmirror backup`: the real binaries on real files.

Every test builds its own root (journal files written by hand, by the real
`jmirror append`, or by writer processes), backs it up into a directory
outside it, and checks the result independently of jmirror: every file of
DEST/journal must be the root's file up to a LF (its last one when nothing
writes), the manifest's byte counts and SHA-256 values are recomputed with
hashlib, and `jmirror backup --check` must agree.  Waiting on the daemon is
a poll with a deadline; the only sleeps are the random kill points of the
crash test and the pacing of the writer processes.
"""
import hashlib
import json
import os
import pty
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (JMIRROR, Daemon, message_count, mirror_db, query, run,  # noqa: E402
                     run_cli, verify, wait_until, wait_verify_clean)

TS = "2026-03-01T10:00:00.000000Z"


def note(text):
    print("# " + text, flush=True)


def jfile(root, cid):
    return os.path.join(root, "journal", cid + ".jsonl")


def dfile(dest, cid):
    return os.path.join(dest, "journal", cid + ".jsonl")


def event(cid, k, size=100, tag=""):
    """One complete journal line (bytes): a message of about `size` bytes."""
    return (json.dumps({"type": "message", "id": "%s-%s%d" % (cid, tag, k), "role": "user",
                        "content": ("%s %d " % (tag, k)) + "x" * size, "ts": TS}) + "\n").encode()


def lines(cid, start, n, size=100, tag=""):
    return b"".join(event(cid, k, size, tag) for k in range(start, start + n))


def write_raw(root, cid, data, mode="ab"):
    """Write journal bytes by hand (any program may, per the format)."""
    os.makedirs(os.path.join(root, "journal"), mode=0o700, exist_ok=True)
    with open(jfile(root, cid), mode) as f:
        f.write(data)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def complete(data):
    """The bytes up to and including the last LF."""
    return data[:data.rfind(b"\n") + 1]


def sha(data):
    return hashlib.sha256(data).hexdigest()


def root_ids(root):
    jd = os.path.join(root, "journal")
    return sorted(n[:-6] for n in os.listdir(jd) if n.endswith(".jsonl"))


def tree(top):
    """Every path under top (for 'nothing was created')."""
    out = []
    for d, dirs, files in os.walk(top):
        out += [os.path.relpath(os.path.join(d, n), top) for n in dirs + files]
    return sorted(out)


def backup(root, dest, *args, env=None, timeout=120):
    """`jmirror backup DEST --json`: (Result, parsed answer or None)."""
    r = run_cli("backup", dest, "--json", *args, root=root, env=env, timeout=timeout)
    try:
        j = json.loads(r.out) if r.code == 0 else None
    except ValueError:
        j = None
    return r, j


def backup_ok(root, dest, *args, quiet=True):
    r, j = backup(root, dest, *args)
    assert r.code == 0 and j is not None, r
    if quiet:
        assert r.err == "", r
    return j


def check(dest):
    """`jmirror backup --check DEST --json`: (exit code, answer, Result)."""
    r = run_cli("backup", "--check", dest, "--json")
    try:
        j = json.loads(r.out) if r.out.strip() else None
    except ValueError:
        j = None
    return r.code, j, r


def check_ok(dest, problems=False):
    code, j, r = check(dest)
    assert code == 0 and j is not None and j["ok"] and j["files_bad"] == 0, r
    if not problems:
        assert j["problems"] == [] and j["extra"] == 0, r
    return j


def manifest(dest):
    with open(os.path.join(dest, "MANIFEST.json"), "rb") as f:
        return json.loads(f.read())


def entries(dest):
    return {e["path"]: e for e in manifest(dest)["files"]}


def assert_manifest_true(dest):
    """Every entry's bytes are in DEST, exactly that many, with that SHA-256
    (recomputed here), and end at a LF; the resume point is sane."""
    for path, e in entries(dest).items():
        data = read(os.path.join(dest, path))
        assert len(data) == e["bytes"], (path, len(data), e)
        assert sha(data) == e["sha256"], (path, e)
        assert data == b"" or data.endswith(b"\n"), (path, data[-80:])
        r = e["resume"]
        assert r["at"] % 64 == 0 and r["at"] <= e["bytes"], (path, e)
        assert (r["state"] == "") == (r["at"] == 0), (path, e)


def assert_private(dest):
    """Conversations are personal data: what the backup creates in DEST is
    0600 (files) and 0700 (directories)."""
    for d, dirs, files in os.walk(dest):
        if d != dest:
            assert os.stat(d).st_mode & 0o777 == 0o700, (d, oct(os.stat(d).st_mode))
        for n in files:
            m = os.stat(os.path.join(d, n)).st_mode & 0o777
            assert m == 0o600, (os.path.join(d, n), oct(m))


def assert_backup_exact(root, dest, gone=()):
    """Nothing writes: DEST holds every root file up to its last LF, the
    manifest lists exactly those (plus the gone ones), --check is clean."""
    ids = root_ids(root)
    ents = entries(dest)
    want = {"journal/%s.jsonl" % c for c in ids} | {"journal/%s.jsonl" % c for c in gone}
    assert set(ents) == want, (sorted(set(ents) ^ want))
    for cid in ids:
        data = complete(read(jfile(root, cid)))
        got = read(dfile(dest, cid))
        assert got == data, (cid, len(got), len(data))
        e = ents["journal/%s.jsonl" % cid]
        assert e["bytes"] == len(data) and e["sha256"] == sha(data), (cid, e)
        assert not e.get("gone"), e
    for cid in gone:
        assert ents["journal/%s.jsonl" % cid].get("gone") is True, ents
    assert_manifest_true(dest)
    assert_private(dest)
    check_ok(dest)


def assert_backup_consistent(root, dest):
    """Writers may be running: every file of the backup is a prefix of the
    root's file ending at a LF, as the manifest says; --check passes."""
    assert_manifest_true(dest)
    for path, e in entries(dest).items():
        got = read(os.path.join(dest, path))
        now = read(os.path.join(root, path))
        assert now.startswith(got), (path, len(got), len(now))
    check_ok(dest)


def dstats(dest):
    out = {}
    jd = os.path.join(dest, "journal")
    for n in os.listdir(jd):
        try:
            st = os.stat(os.path.join(jd, n))
        except FileNotFoundError:   # renamed meanwhile
            continue
        out[n[:-6] if n.endswith(".jsonl") else n] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def kill_proc(p):
    if p.poll() is None:
        p.kill()
    p.wait()


# Writer processes: append message lines under flock, like the writer
# library, some in two writes (a pending tail that a backup may see).
WRITER = r'''
import fcntl, json, os, random, sys, time
cfg = json.loads(sys.argv[1])
root, seed, stop = cfg["root"], cfg["seed"], cfg["stop"]
rnd = random.Random(seed)
jdir = os.path.join(root, "journal")
os.makedirs(jdir, mode=0o700, exist_ok=True)

def line(cid, k):
    c = "w%d " % seed + "".join(rnd.choice("abc \u00fc\u3042") for _ in range(8)) \
        * rnd.randint(0, cfg.get("maxlen", 300))
    return (json.dumps({"type": "message", "id": "%s-w%d-%d" % (cid, seed, k), "role": "user",
                        "content": c, "ts": "2026-03-01T10:00:00Z"}) + "\n").encode()

def write(cid, data, split):
    fd = os.open(os.path.join(jdir, cid + ".jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if split and len(data) > 2:
            k = rnd.randint(1, len(data) - 1)
            os.write(fd, data[:k])
            time.sleep(split)
            os.write(fd, data[k:])
        else:
            os.write(fd, data)
    finally:
        os.close(fd)

if cfg.get("mode") == "pending":
    # half a line, then wait for a word on stdin before the rest
    cid = cfg["convs"][0]
    data = line(cid, 0)
    fd = os.open(os.path.join(jdir, cid + ".jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, data[:len(data) // 2])
    print("half", flush=True)
    sys.stdin.readline()
    os.write(fd, data[len(data) // 2:])
    os.close(fd)
    print("done", flush=True)
    sys.exit(0)

n = 0
while n < cfg.get("lines", 10 ** 9) and not os.path.exists(stop):
    cid = rnd.choice(cfg["convs"])
    write(cid, line(cid, n), cfg.get("split", 0.001) if rnd.random() < cfg.get("split_p", 0) else 0)
    n += 1
    if cfg.get("pace"):
        time.sleep(rnd.random() * cfg["pace"])
print(n, flush=True)
'''


def start_writer(**cfg):
    return subprocess.Popen([sys.executable, "-c", WRITER, json.dumps(cfg)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)


# --------------------------------------------------------------------------
# 1. First backup, then incremental ones.

def test_first_then_incremental(tmp):
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    rnd = random.Random(1)
    tails = {}
    for i in range(24):
        cid = "c%02d" % i
        if i == 0:
            data = lines(cid, 0, 3000, 100)        # ~400 KB: beyond the sampled spans
        elif i == 1:
            data = event(cid, 0)[:40]             # only a pending tail
        elif i == 2:
            data = b""                            # empty
        elif i == 4:
            data = b""                            # exactly 128 bytes: a 64-byte boundary
            ev = event(cid, 0, 0)
            data = event(cid, 0, 128 - len(ev))
            assert len(data) == 128
        else:
            data = lines(cid, 0, rnd.randint(1, 40), rnd.choice([10, 200, 3000]))
            if i % 3 == 0:                        # a pending tail
                t = event(cid, 999)
                tails[cid] = t[len(t) // 2:]
                data += t[:len(t) // 2]
        write_raw(root, cid, data)
    for k in range(3):                            # the real writer, too
        r = run_cli("append", "c05", json.dumps({"type": "message", "id": "cli%d" % k,
                                                 "role": "user", "content": "ü😀 %d" % k}),
                    root=root)
        assert r.code == 0, r
    ids = root_ids(root)
    j = backup_ok(root, dest)
    total = sum(len(complete(read(jfile(root, c)))) for c in ids)
    assert j["bytes_copied"] == total == j["bytes_total"], (j, total)
    assert (j["files"], j["new"], j["appended"], j["unchanged"], j["recopied"], j["kept"]) == \
        (24, 24, 0, 0, 0, 0), j
    assert_backup_exact(root, dest)
    assert os.stat(dest).st_mode & 0o777 == 0o700
    assert entries(dest)["journal/c01.jsonl"]["bytes"] == 0
    first = total

    # Appends of every kind, and new conversations.
    before = {c: len(complete(read(jfile(root, c)))) for c in ids}
    st0 = dstats(dest)
    write_raw(root, "c00", lines("c00", 3000, 50, 100))
    write_raw(root, "c01", event("c01", 0)[40:] + lines("c01", 1, 2))  # tail completed
    write_raw(root, "c03", tails["c03"])                                 # only the tail's rest
    write_raw(root, "c04", lines("c04", 1, 1, 0))                        # from a 64-byte boundary
    write_raw(root, "c06", tails["c06"] + lines("c06", 1000, 3) + event("c06", 2000)[:10])
    write_raw(root, "c07", event("c07", 500)[:30])                       # a new pending tail only
    write_raw(root, "c10", lines("c10", 100, 7, 3000))
    for k in range(3):
        r = run_cli("append", "c05", json.dumps({"type": "message", "id": "cli-b%d" % k,
                                                 "role": "user", "content": "more %d" % k}),
                    root=root)
        assert r.code == 0, r
    for k in range(4):
        write_raw(root, "n%d" % k, lines("n%d" % k, 0, k * 5 + 1, 500))
    write_raw(root, "n9", event("n9", 0)[:20])                           # new, no complete line
    after = {c: len(complete(read(jfile(root, c)))) for c in ids}
    grown = [c for c in ids if after[c] > before[c]]
    same = [c for c in ids if after[c] == before[c]]
    appended = sum(after[c] - before[c] for c in ids)
    new_bytes = sum(len(complete(read(jfile(root, "n%d" % k)))) for k in (0, 1, 2, 3, 9))
    assert sorted(grown) == ["c00", "c01", "c03", "c04", "c05", "c06", "c10"], grown

    j = backup_ok(root, dest)
    assert j["bytes_copied"] == appended + new_bytes, (j, appended, new_bytes)
    assert (j["files"], j["new"], j["appended"], j["unchanged"], j["recopied"], j["kept"]) == \
        (29, 5, len(grown), len(same), 0, 0), j
    assert_backup_exact(root, dest)
    st1 = dstats(dest)
    for c in same:   # not rewritten, not even touched
        assert st1[c] == st0[c], (c, st0[c], st1[c])
    for c in grown:  # appended in place
        assert st1[c][0] == st0[c][0] and st1[c][2] == after[c], (c, st0[c], st1[c])
    note("first backup %d bytes; then %d complete-line bytes appended to %d files + %d in 5 "
         "new files: bytes_copied %d" % (first, appended, len(grown), new_bytes, j["bytes_copied"]))

    # Nothing new: nothing copied, nothing touched.
    j = backup_ok(root, dest)
    assert j["bytes_copied"] == 0 and j["unchanged"] == 29 and j["files"] == 29, j
    assert dstats(dest) == st1
    assert_backup_exact(root, dest)


def test_only_journal_files(tmp):
    """Only regular files with a valid name are backed up: not a FIFO (the
    backup must not hang on it), a directory, a symlink, or another name."""
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    write_raw(root, "ok", lines("ok", 0, 3))
    jd = os.path.join(root, "journal")
    os.mkfifo(os.path.join(jd, "fifo.jsonl"))
    os.mkdir(os.path.join(jd, "dir.jsonl"))
    os.symlink("ok.jsonl", os.path.join(jd, "link.jsonl"))
    os.symlink("/etc/passwd", os.path.join(jd, "pw.jsonl"))
    for n in ("Upper.jsonl", "notes.txt", ".hidden.jsonl"):
        with open(os.path.join(jd, n), "wb") as f:
            f.write(b"{}\n")
    j = backup_ok(root, dest)
    assert j["files"] == 1, j
    assert os.listdir(os.path.join(dest, "journal")) == ["ok.jsonl"]
    assert list(entries(dest)) == ["journal/ok.jsonl"]
    check_ok(dest)


# --------------------------------------------------------------------------
# 2. Backups while writers and the daemon run.

def test_consistent_while_writing(tmp):
    root, stop = os.path.join(tmp, "root"), os.path.join(tmp, "stop")
    os.makedirs(os.path.join(root, "journal"), mode=0o700)
    procs, cli_stop = [], threading.Event()
    cli_count, cli_fail = [0], []

    def cli_writer():
        k = 0
        while not cli_stop.is_set():
            r = run_cli("append", "cli", json.dumps({"type": "message", "id": "k%d" % k,
                                                     "role": "user", "content": "c" * (k % 500)}),
                        "--sync", "none", root=root)
            if r.code != 0:
                cli_fail.append(r)
                return
            k += 1
        cli_count[0] = k

    with Daemon(root) as d:
        t = threading.Thread(target=cli_writer)
        try:
            for s in range(3):
                procs.append(start_writer(root=root, seed=s, stop=stop, pace=0.002, split_p=0.3,
                                          maxlen=40, convs=["w%d" % i for i in range(6)],
                                          lines=5000))
            pend = start_writer(root=root, seed=9, stop=stop, mode="pending", convs=["pend"])
            procs.append(pend)
            assert pend.stdout.readline() == b"half\n"
            half = read(jfile(root, "pend"))
            assert half and b"\n" not in half
            t.start()
            copied, runs = [], 8
            for i in range(runs):
                # wait for the writers to have written something new
                size0 = sum(os.path.getsize(jfile(root, c)) for c in root_ids(root))
                wait_until(lambda: sum(os.path.getsize(jfile(root, c)) for c in root_ids(root))
                           > size0 + 20000, 20, "the writers to append")
                j = backup_ok(root, os.path.join(tmp, "dest"))
                copied.append(j["bytes_copied"])
                assert_backup_consistent(root, os.path.join(tmp, "dest"))
                got = read(dfile(os.path.join(tmp, "dest"), "pend"))
                if i < runs // 2:   # the half line is never in the backup
                    assert got == b"", got
                else:
                    assert got == read(jfile(root, "pend")) and got.endswith(b"\n"), got
                if i == runs // 2 - 1:
                    pend.stdin.write(b"go\n")
                    pend.stdin.flush()
                    assert pend.stdout.readline() == b"done\n"
            assert all(c > 0 for c in copied[1:]), copied
        finally:
            with open(stop, "w"):
                pass
            cli_stop.set()
            if t.is_alive():
                t.join(60)
            for p in procs:
                try:
                    p.wait(30)
                finally:
                    kill_proc(p)
        assert all(p.returncode == 0 for p in procs), [p.returncode for p in procs]
        assert cli_count[0] > 0 and not cli_fail, cli_fail
        j = backup_ok(root, os.path.join(tmp, "dest"))
        assert_backup_exact(root, os.path.join(tmp, "dest"))
        wait_verify_clean(root, 60)
        note("%d backups while 3 writer processes, the CLI writer and a pending tail ran: "
             "%s bytes copied per run, %d bytes in the end"
             % (len(copied), copied, j["bytes_total"]))
        assert d.alive()


# --------------------------------------------------------------------------
# 3. Files that no longer match the backup.

def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x20 if b != b"\n" else ord("X")]))


def test_mismatch_copied_whole(tmp):
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    small = ["a1", "a2", "a3", "b1", "b2", "b3", "d1", "d2", "d3", "d4", "ok"]
    for cid in small:
        write_raw(root, cid, lines(cid, 0, 30, 200))
    for cid in ("big-head", "big-tail", "big-mid"):
        write_raw(root, cid, lines(cid, 0, 2000, 200))   # ~500 KB
    backup_ok(root, dest)
    assert_backup_exact(root, dest)

    # (a) the root rewritten: same size, or larger
    data = read(jfile(root, "a1"))                                   # same size, first line
    write_raw(root, "a1", data.replace(b"a1-0", b"a1-Z", 1), "wb")
    data = read(jfile(root, "a2"))                                   # same size, last line
    write_raw(root, "a2", data[:-20] + b"y" * 19 + b"\n", "wb")
    write_raw(root, "a3", lines("a3", 0, 40, 200, tag="other"), "wb")  # larger, all new
    data = read(jfile(root, "big-head"))                             # in the first 4 KiB
    write_raw(root, "big-head", data[:100] + b"Q" + data[101:], "wb")
    data = read(jfile(root, "big-tail"))                 # 1 KB before the old end, and grown
    write_raw(root, "big-tail", data[:-1000] + b"Q" + data[-999:] + lines("big-tail", 5000, 3),
              "wb")
    # (b) the root truncated: at a LF, mid-line, to nothing
    data = read(jfile(root, "b1"))
    os.truncate(jfile(root, "b1"), len(complete(data[:len(data) // 2])))
    os.truncate(jfile(root, "b2"), len(data) // 2 + 3)
    os.truncate(jfile(root, "b3"), 0)
    check_ok(dest)   # the backup itself is intact
    r, j = backup(root, dest)
    assert r.code == 0 and j is not None, r
    recopied = ["a1", "a2", "a3", "b1", "b2", "b3", "big-head", "big-tail"]
    assert sorted(x["file"] for x in j["reports"]) == recopied, j
    assert all(x["what"].startswith("copied whole") for x in j["reports"]), j
    assert j["recopied"] == len(recopied) and j["unchanged"] == 6 and j["appended"] == 0, j
    want = sum(len(complete(read(jfile(root, c)))) for c in recopied)
    assert j["bytes_copied"] == want, (j, want)
    assert_backup_exact(root, dest)
    note("root files rewritten or truncated: %d copied whole, %d bytes = their complete lines"
         % (j["recopied"], j["bytes_copied"]))

    # (c) the backup's copy damaged: middle, last byte (its LF), second to
    # last, truncated.  --check names them; the next backup (text output:
    # one line per file on stderr) copies them whole.
    size = os.path.getsize(dfile(dest, "d1"))
    flip(dfile(dest, "d1"), size // 2)
    flip(dfile(dest, "d2"), size - 1)
    flip(dfile(dest, "d3"), size - 2)
    os.truncate(dfile(dest, "d4"), size // 3)
    code, j, r = check(dest)
    assert code == 1 and j is not None and not j["ok"] and j["files_bad"] == 4, r
    named = sorted(p["file"] for p in j["problems"])
    assert named == ["journal/d%d.jsonl" % i for i in (1, 2, 3, 4)], j
    r = run_cli("backup", "--check", dest)
    assert r.code == 1 and r.out.startswith("checked 14 files: 10 ok, 4 bad"), r
    assert sorted(r.err.splitlines()) == [
        "jmirror: backup: journal/d%d.jsonl: %s" % (i, why) for i, why in (
            (1, "SHA-256 differs from the manifest (damaged copy)"),
            (2, "SHA-256 differs from the manifest (damaged copy)"),
            (3, "SHA-256 differs from the manifest (damaged copy)"),
            (4, "has %d bytes, the manifest says %d" % (size // 3, size)))], r
    r = run_cli("backup", dest, root=root)
    assert r.code == 0 and ", 4 copied whole," in r.out, r
    assert sorted(r.err.splitlines()) == [
        "jmirror: backup: d%d: copied whole: %s" % (i, why) for i, why in (
            (1, "the bytes the backup held no longer match the root"),
            (2, "the bytes the backup held no longer match the root"),
            (3, "the bytes the backup held no longer match the root"),
            (4, "the backup's copy is shorter than its manifest says"))], r
    assert_backup_exact(root, dest)

    # A root changed only in the middle of a large file is beyond the sampled
    # check: the backup keeps what it had, and stays true to its manifest.
    data = read(jfile(root, "big-mid"))
    write_raw(root, "big-mid", data[:len(data) // 2] + b"Q" + data[len(data) // 2 + 1:], "wb")
    j = backup_ok(root, dest)
    note("a byte changed in the middle of a 500 KB root file: %s"
         % ("copied whole" if j["recopied"] else "not noticed (sampled check), backup unchanged"))
    assert_manifest_true(dest)
    check_ok(dest)


def test_damaged_large_copy(tmp):
    """A copy damaged where the sampled check does not look: --check finds
    it, the backup never vouches for the damaged bytes, and removing the
    damaged copy makes the next backup copy it again."""
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    write_raw(root, "big", lines("big", 0, 2000, 200))
    backup_ok(root, dest)
    size = os.path.getsize(dfile(dest, "big"))
    flip(dfile(dest, "big"), size // 2)
    code, j, r = check(dest)
    assert code == 1 and [p["file"] for p in j["problems"]] == ["journal/big.jsonl"], r
    write_raw(root, "big", lines("big", 2000, 10, 200))
    r, j = backup(root, dest)
    assert r.code == 0, r
    e = entries(dest)["journal/big.jsonl"]
    assert e["sha256"] == sha(complete(read(jfile(root, "big")))), "manifest vouches for damage"
    code, j2, r2 = check(dest)
    note("damage in the middle of a large copy: next backup %s; --check afterwards exit %d"
         % ("recopied it" if j["recopied"] else "did not notice", code))
    if code != 0:
        assert [p["file"] for p in j2["problems"]] == ["journal/big.jsonl"], r2
        os.unlink(dfile(dest, "big"))
        r, j = backup(root, dest)
        assert r.code == 0 and j["recopied"] == 1, r
    assert_backup_exact(root, dest)


# --------------------------------------------------------------------------
# 4. Leftovers of interrupted runs.

def test_junk_beyond_manifest(tmp):
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    for i in range(6):
        write_raw(root, "j%d" % i, lines("j%d" % i, 0, 10 * i, 300))
    backup_ok(root, dest)
    junk = {"j0": b"junk", "j2": b"more junk\n", "j5": b"\n" * 5000}
    for cid, b in junk.items():
        with open(dfile(dest, cid), "ab") as f:
            f.write(b)
    j = check_ok(dest, problems=True)
    named = sorted(p["file"] for p in j["problems"])
    assert named == ["journal/%s.jsonl" % c for c in sorted(junk)], j
    assert all("beyond the manifest" in p["what"] for p in j["problems"]), j
    j = backup_ok(root, dest)
    assert j["bytes_copied"] == 0 and j["unchanged"] == 6, j
    assert_backup_exact(root, dest)


def grow_root(root, rnd, nbytes, new=2, tag="g"):
    """Append about nbytes of complete lines to random files (finishing a
    pending line first; sometimes leaving a new one) and create `new`
    conversations."""
    ids = root_ids(root) if os.path.isdir(os.path.join(root, "journal")) else []
    targets = [c for c in ids if rnd.random() < 0.7]
    targets += ["%s%06d" % (tag, rnd.randrange(10 ** 6)) for _ in range(new)]
    targets = targets or ids[:1]
    per = nbytes // len(targets)
    for cid in targets:
        path = jfile(root, cid)
        data = read(path) if os.path.exists(path) else b""
        chunk = b"\n" if data and not data.endswith(b"\n") else b""
        chunk += lines(cid, rnd.randrange(10 ** 9), max(1, per // 1100), 1000, tag=tag)
        if rnd.random() < 0.2:
            chunk += event(cid, 7, 50)[:25]
        write_raw(root, cid, chunk)


def root_bytes(root):
    return sum(os.path.getsize(jfile(root, c)) for c in root_ids(root))


def test_kill9_at_random_points(tmp):
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    seed = int(os.environ.get("JM_SEED", "0")) or random.randrange(1 << 30)
    rnd = random.Random(seed)
    grow_root(root, rnd, 30 << 20, new=40)
    # How long a full run takes here: the kill points are drawn from it.
    t0 = time.monotonic()
    backup_ok(root, os.path.join(tmp, "scratch"))
    full = first = time.monotonic() - t0
    shutil.rmtree(os.path.join(tmp, "scratch"))
    killed = completed = after_manifest = 0
    had_manifest = False
    est = 0.05   # of an incremental run; adapted so that some runs complete
    # a few dozen kills in CI, many more with JM_NIGHTLY=1 (crashkit's knob)
    n_rounds = 150 if os.environ.get("JM_NIGHTLY", "") not in ("", "0") else 24
    for rnd_i in range(n_rounds):
        if rnd_i > 0:
            grow_root(root, rnd, rnd.choice([1, 5, 10]) << 20, new=rnd.randint(0, 3))
        prev = read(os.path.join(dest, "MANIFEST.json")) if had_manifest else None
        p = subprocess.Popen([JMIRROR, "--root", root, "backup", dest],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            time.sleep(rnd.uniform(0, est if had_manifest else full))  # a random kill point
        finally:
            kill_proc(p)
            err = p.stderr.read()
            p.stderr.close()
        if p.returncode == -signal.SIGKILL:
            killed += 1
            if had_manifest:
                est *= 1.5
            else:
                full *= 1.5   # the next first run copies more
        else:
            assert p.returncode == 0, (p.returncode, err)
            completed += 1
            if had_manifest:
                est *= 0.7
        mpath = os.path.join(dest, "MANIFEST.json")
        if not os.path.exists(mpath):
            assert not had_manifest, "the manifest disappeared"
            code, j, r = check(dest)
            assert code == 1 and "no MANIFEST.json" in r.err, r
            continue
        cur = read(mpath)
        json.loads(cur)   # never half-written
        had_manifest = True
        after_manifest += p.returncode != 0 and prev is not None and cur != prev
        # the old manifest (or a new complete one) still describes the backup
        check_ok(dest, problems=True)
        for path, e in entries(dest).items():
            got = read(os.path.join(dest, path))[:e["bytes"]]
            assert read(os.path.join(root, path)).startswith(got), path
    j = backup_ok(root, dest)
    assert_backup_exact(root, dest)
    note("seed %d: 10 rounds on a %.0f MB root (first full run %.2f s): %d killed (%d of them "
         "after the new manifest), %d completed; then a complete run copied %d bytes"
         % (seed, j["bytes_total"] / 1e6, first, killed, after_manifest, completed,
            j["bytes_copied"]))
    assert killed >= 3, (killed, completed)


def test_kill9_while_copying_whole(tmp):
    """A file that must be copied whole, killed mid-copy: the previous
    backup's copy is not destroyed under its manifest."""
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    write_raw(root, "a", lines("a", 0, 100, 100))
    write_raw(root, "huge", lines("huge", 0, 20000, 1000))   # ~20 MB
    backup_ok(root, dest)
    old = read(dfile(dest, "huge"))
    write_raw(root, "huge", lines("huge", 0, 30000, 1000, tag="new"), "wb")
    before = dstats(dest)
    p = subprocess.Popen([JMIRROR, "--root", root, "backup", dest],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # kill as soon as anything in DEST/journal has changed
        wait_until(lambda: p.poll() is not None or dstats(dest) != before, 30,
                   "the backup to start writing", interval=0.0005)
    finally:
        kill_proc(p)
    assert p.returncode == -signal.SIGKILL, "the backup finished before the kill"
    code, j, r = check(dest)
    assert code == 0, ("a killed run destroyed a copy the manifest vouches for", r)
    assert read(dfile(dest, "huge"))[:len(old)] == old
    backup_ok(root, dest, quiet=False)
    assert_backup_exact(root, dest)


# --------------------------------------------------------------------------
# 5. Errors.

def test_dest_inside_root(tmp):
    root = os.path.join(tmp, "root")
    write_raw(root, "c1", lines("c1", 0, 5))
    os.makedirs(os.path.join(root, "mirror"))
    os.symlink(os.path.join(root, "mirror"), os.path.join(tmp, "link"))
    os.symlink(root, os.path.join(tmp, "rootlink"))
    os.symlink(os.path.join(root, "sub"), os.path.join(tmp, "dangling"))
    before = tree(root)
    for dest in [os.path.join(root, "backups", "b1"), os.path.join(root, "journal", "x"),
                 os.path.join(root, "mirror"), root, root + "/", os.path.join(tmp, "link", "b"),
                 os.path.join(tmp, "rootlink"), os.path.join(root, "..", "root", "x")]:
        r = run_cli("backup", dest, root=root)
        assert r.code == 2, (dest, r)
        assert "inside the root" in r.err, (dest, r)
        assert tree(root) == before, (dest, tree(root))
    # through a dangling link into the root: an error too, nothing created
    r = run_cli("backup", os.path.join(tmp, "dangling", "b"), root=root)
    assert r.code != 0, r
    assert tree(root) == before, tree(root)
    # relative, from inside the root
    p = subprocess.run([JMIRROR, "--root", "..", "backup", "b"], cwd=os.path.join(root, "journal"),
                       capture_output=True)
    assert p.returncode == 2 and b"inside the root" in p.stderr, p
    assert tree(root) == before
    # a sibling whose name starts like the root is fine
    j = backup_ok(root, root + "-backup")
    assert j["files"] == 1
    assert_backup_exact(root, root + "-backup")


def journal_bytes(root):
    return {c: read(jfile(root, c)) for c in root_ids(root)}


def test_dest_links_into_root(tmp):
    """A DEST whose journal is the root's own (a symlinked directory, a
    hard-link copy of the root) is refused and the root's files are left
    byte for byte; a DEST that is a hard-linked snapshot of an earlier
    backup is updated without changing that earlier backup."""
    root = os.path.join(tmp, "root")
    for c in ("c1", "c2"):
        write_raw(root, c, lines(c, 0, 20, size=300))
    before = journal_bytes(root)
    # DEST/journal a symbolic link to ROOT/journal
    dest = os.path.join(tmp, "symdir")
    os.makedirs(dest)
    os.symlink(os.path.join(root, "journal"), os.path.join(dest, "journal"))
    r, _ = backup(root, dest)
    assert r.code == 2 and "leads into the root" in r.err, r
    assert journal_bytes(root) == before
    # a hard-link copy of the root (cp -al ROOT SNAP), then the root grows:
    # the snapshot's files are the root's files
    snap = os.path.join(tmp, "snap")
    subprocess.run(["cp", "-al", root, snap], check=True)
    write_raw(root, "c1", lines("c1", 20, 3, size=300))
    before = journal_bytes(root)
    r, _ = backup(root, snap)
    assert r.code == 2 and "root's own journal file" in r.err, r
    assert journal_bytes(root) == before
    # rsync --link-dest style: b1 starts as a hard-linked copy of b0
    b0, b1 = os.path.join(tmp, "b0"), os.path.join(tmp, "b1")
    backup_ok(root, b0)
    b0_files = {c: read(dfile(b0, c)) for c in root_ids(root)}
    b0_manifest = read(os.path.join(b0, "MANIFEST.json"))
    subprocess.run(["cp", "-al", b0, b1], check=True)
    write_raw(root, "c1", lines("c1", 23, 5, size=300))
    write_raw(root, "c2", b'{"type":"message","id":"half')  # a torn tail
    j = backup_ok(root, b1)
    assert j["files"] == 2, j
    assert {c: read(dfile(b0, c)) for c in root_ids(root)} == b0_files
    assert read(os.path.join(b0, "MANIFEST.json")) == b0_manifest
    check_ok(b0)
    assert_backup_exact(root, b1)
    for c in root_ids(root):
        assert os.stat(dfile(b1, c)).st_nlink == 1, c
    # the next backup into b1 appends in place again
    write_raw(root, "c2", b'","role":"user"}\n')
    j = backup_ok(root, b1)
    assert j["appended"] >= 1, j
    assert_backup_exact(root, b1)
    # a symbolic link for a file in DEST/journal is never followed
    dest = os.path.join(tmp, "symfile")
    backup_ok(root, dest)
    outside = os.path.join(tmp, "outside.jsonl")
    with open(outside, "wb") as f:
        f.write(b"precious\n")
    os.unlink(dfile(dest, "c1"))
    os.symlink(outside, dfile(dest, "c1"))
    r, _ = backup(root, dest)
    assert r.code != 0 and "c1.jsonl" in r.err, r
    assert read(outside) == b"precious\n"


def state(top):
    """Every file under top with its bytes and mtime (for 'nothing changed')."""
    out = {}
    for d, dirs, files in os.walk(top):
        for n in files:
            path = os.path.join(d, n)
            st = os.lstat(path)
            out[os.path.relpath(path, top)] = (
                os.readlink(path) if os.path.islink(path) else read(path), st.st_mtime_ns)
    return out


def test_link_refusals_change_nothing(tmp):
    """A DEST refused because one of its files is a symbolic link or the
    root's own file is refused before anything is written: a conversation
    new in the root (sorted before the offending file) is not created in
    DEST either.  A leftover whole copy that is a hard link to the root's
    file is never opened for writing, and a DEST/mirror leading into the
    root is refused before the snapshot is renamed over the live mirror."""
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    for c in ("c1", "c2", "c3"):
        write_raw(root, c, lines(c, 0, 10, 200))
    backup_ok(root, dest)
    for c in ("a0", "c1", "c2", "c3"):
        write_raw(root, c, lines(c, 10, 3, 200))
    before_root = journal_bytes(root)
    for bad in ("hardlink", "symlink"):
        os.unlink(dfile(dest, "c3"))
        if bad == "hardlink":
            os.link(jfile(root, "c3"), dfile(dest, "c3"))
        else:
            os.symlink(jfile(root, "c3"), dfile(dest, "c3"))
        before = state(dest)
        r, _ = backup(root, dest)
        assert r.code == 2 and "c3.jsonl" in r.err.splitlines()[0], (bad, r)
        assert state(dest) == before, bad
        assert journal_bytes(root) == before_root, bad
    os.unlink(dfile(dest, "c3"))
    # a whole copy left by a killed run, hard-linked to the root's file,
    # while the file must be copied whole: the root's file is never cut
    write_raw(root, "c2", lines("c2", 0, 20, 210, tag="rewritten"), "wb")
    os.link(jfile(root, "c2"), os.path.join(dest, "journal", ".c2.jsonl.copy"))
    before_root = journal_bytes(root)
    backup_ok(root, dest, quiet=False)
    assert journal_bytes(root) == before_root
    assert_backup_exact(root, dest)
    # DEST/mirror a symbolic link to the root's mirror directory
    assert run_cli("ingest", root=root).code == 0
    live = mirror_db(root)
    live_before = read(live)
    os.symlink(os.path.dirname(live), os.path.join(dest, "mirror"))
    r, _ = backup(root, dest, "--with-mirror")
    assert r.code == 2 and "leads into the root" in r.err, r
    assert read(live) == live_before
    assert not [n for n in os.listdir(os.path.dirname(live)) if "tmp" in n]
    check_ok(dest)


def test_mirror_snapshot_first(tmp):
    """--with-mirror: a root without a mirror is an error before DEST is
    even created; the snapshot is taken before any journal byte is written
    (with a file-size limit that both the snapshot and a journal file
    exceed, the snapshot is what fails)."""
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    write_raw(root, "a", lines("a", 0, 400, 1000))
    r = run_cli("backup", dest, "--with-mirror", root=root)
    assert r.code == 1 and "no mirror" in r.err and len(r.err.splitlines()) == 1, r
    assert not os.path.exists(dest)
    assert run_cli("ingest", root=root).code == 0
    limit = 256 << 10
    assert os.path.getsize(jfile(root, "a")) > limit and os.path.getsize(mirror_db(root)) > limit
    code, out, err = run_limited(["backup", dest, "--with-mirror"], limit, root)
    assert code == 1 and "snapshot the mirror" in err and "journal" not in err, (code, err)
    assert not os.path.exists(os.path.join(dest, "journal", "a.jsonl"))
    j = backup_ok(root, dest, "--with-mirror")
    assert j["files"] == 1 and j["mirror_bytes"] > limit, j


def test_leftovers_and_other_root(tmp):
    """Whatever an interrupted run left (MANIFEST.json.tmp.<pid>, whole
    copies of conversations no longer in the root) is removed by the next
    backup and never counted by --check; a DEST holding another root's
    backup is refused with nothing changed; an empty DEST is a usage error."""
    root, other, dest = (os.path.join(tmp, n) for n in ("root", "other", "dest"))
    for c in ("c1", "c2"):
        write_raw(root, c, lines(c, 0, 5))
        write_raw(other, c, lines(c, 0, 7, tag="other"))
    backup_ok(root, dest)
    left = [os.path.join(dest, "MANIFEST.json.tmp.99999"),
            os.path.join(dest, "journal", ".gone.jsonl.copy")]
    for p in left:
        with open(p, "wb") as f:
            f.write(b'{"partial":')
    assert check_ok(dest)["extra"] == 0
    write_raw(root, "c1", lines("c1", 5, 2))
    backup_ok(root, dest)
    assert not [p for p in left if os.path.exists(p)], left
    assert_backup_exact(root, dest)
    # another root into the same DEST: refused before anything changes,
    # not even the leftovers (the DEST is not this run's to clean)
    with open(left[0], "wb") as f:
        f.write(b'{"partial":')
    before = state(dest)
    r, _ = backup(other, dest)
    assert r.code == 2 and "another root" in r.err.splitlines()[0], r
    assert state(dest) == before
    # the same root by another path is the same root
    os.symlink(root, os.path.join(tmp, "rootlink"))
    backup_ok(os.path.join(tmp, "rootlink"), dest)
    assert not os.path.exists(left[0])
    assert manifest(dest)["root"] == os.path.realpath(root)
    # "" is no directory (and never the current one)
    for args in (["backup", ""], ["backup", "--check", ""]):
        p = subprocess.run([JMIRROR, "--root", root] + args, cwd=tmp, capture_output=True)
        assert p.returncode == 2 and b"empty" in p.stderr, (args, p)
    assert sorted(os.listdir(tmp)) == ["dest", "other", "root", "rootlink"]


def test_check_read_only_and_locked(tmp):
    """--check writes nothing, and does not check a DEST a backup is
    writing (it would see whole copies renamed in under the old manifest):
    it says so.  A backup does not start while a check runs."""
    import fcntl
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    write_raw(root, "c1", lines("c1", 0, 5))
    backup_ok(root, dest)
    before = state(dest)
    check_ok(dest)
    assert state(dest) == before
    with open(os.path.join(dest, ".lock"), "rb") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)      # a backup running
        code, _, r = check(dest)
        assert code == 1 and "is running" in r.err and len(r.err.splitlines()) == 1, r
        fcntl.flock(lk, fcntl.LOCK_UN)
        fcntl.flock(lk, fcntl.LOCK_SH)      # a check running
        r, _ = backup(root, dest)
        assert r.code == 1 and "--check" in r.err, r
        check_ok(dest)                      # checks run side by side
    assert state(dest) == before
    # without DEST/.lock (an old backup, a read-only copy) a check still runs
    os.unlink(os.path.join(dest, ".lock"))
    check_ok(dest)
    assert not os.path.exists(os.path.join(dest, ".lock"))


def unprivileged():
    """A command prefix that runs as nobody, or None."""
    for pre in (["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"],
                ["runuser", "-u", "nobody", "--"]):
        if shutil.which(pre[0]) is None:
            continue
        try:
            p = subprocess.run(pre + ["id", "-u"], capture_output=True, timeout=10)
        except OSError:
            continue
        if p.returncode == 0 and p.stdout.strip() == b"65534":
            return pre
    return None


def test_dest_not_writable(tmp):
    if os.geteuid() != 0:
        pre = []   # already unprivileged
    else:
        pre = unprivileged()
        if pre is None:
            note("SKIP: running as root and neither setpriv nor runuser can switch to uid 65534")
            return
    os.chmod(tmp, 0o755)
    root = os.path.join(tmp, "root")
    for i in range(4):
        write_raw(root, "c%d" % i, lines("c%d" % i, 0, 20, 300))
    ro = os.path.join(tmp, "ro")
    os.makedirs(os.path.join(ro, "existing"))
    os.chmod(ro, 0o755)
    os.chmod(os.path.join(ro, "existing"), 0o755)
    good = os.path.join(tmp, "good")
    os.makedirs(good)
    for d in (root, good):
        for dirpath, dirs, files in os.walk(d):
            for n in [dirpath] + [os.path.join(dirpath, f) for f in files]:
                os.chown(n, 65534, 65534)

    def as_nobody(*args):
        p = subprocess.run(pre + [JMIRROR, "--root", root] + list(args), capture_output=True,
                           timeout=60)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    for dest in (os.path.join(ro, "existing"), os.path.join(ro, "new"),
                 os.path.join(ro, "new", "deeper")):
        code, out, err = as_nobody("backup", dest)
        assert code == 1, (dest, code, out, err)
        assert len(err.splitlines()) == 1 and dest in err and "ermission denied" in err, err
        assert tree(ro) == ["existing"], tree(ro)

    # A failure part-way: journal/ of an existing backup is read-only, the
    # root has a new conversation and appends: the appends are cut back.
    code, out, err = as_nobody("backup", good)
    assert code == 0, err
    old = read(os.path.join(good, "MANIFEST.json"))
    for i in range(4):
        write_raw(root, "c%d" % i, lines("c%d" % i, 100, 5, 300))
    write_raw(root, "c9", lines("c9", 0, 5))
    for n in ("c0", "c1", "c2", "c3", "c9"):
        os.chown(jfile(root, n), 65534, 65534)
    os.chmod(os.path.join(good, "journal"), 0o555)
    code, out, err = as_nobody("backup", good)
    assert code == 1 and len(err.splitlines()) == 1 and "c9" in err, (code, err)
    assert read(os.path.join(good, "MANIFEST.json")) == old
    for path, e in entries(good).items():
        assert os.path.getsize(os.path.join(good, path)) == e["bytes"], path
    check_ok(good)
    os.chmod(os.path.join(good, "journal"), 0o700)
    code, out, err = as_nobody("backup", good)
    assert code == 0 and err == "", err
    assert_backup_exact(root, good)


def run_limited(args, limit, root):
    """jmirror with RLIMIT_FSIZE: writes beyond `limit` fail with EFBIG (a
    full disk as far as the program can tell; SIGXFSZ ignored)."""
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    p = subprocess.run([JMIRROR, "--root", root] + list(args), capture_output=True,
                       preexec_fn=pre, timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def assert_previous_state(dest, old_manifest):
    assert read(os.path.join(dest, "MANIFEST.json")) == old_manifest
    for path, e in entries(dest).items():
        assert os.path.getsize(os.path.join(dest, path)) == e["bytes"], \
            (path, os.path.getsize(os.path.join(dest, path)), e["bytes"])
    assert_manifest_true(dest)
    j = check_ok(dest, problems=True)
    # whatever else is there is not vouched for, and --check says so
    assert all("not in the manifest" in p["what"] for p in j["problems"]), j
    assert not [n for n in os.listdir(dest) if n.startswith("MANIFEST.json.")], os.listdir(dest)


def test_disk_full(tmp):
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    for cid in ("a0", "a1", "a2", "a3", "m9", "z1"):
        write_raw(root, cid, lines(cid, 0, 10, 200))
    write_raw(root, "big", lines("big", 0, 200, 1000))
    backup_ok(root, dest)
    old = read(os.path.join(dest, "MANIFEST.json"))
    limit = 1 << 20
    # appends before "big" (in name order), "big" grows past the limit
    for cid in ("a0", "a1", "a2", "a3"):
        write_raw(root, cid, lines(cid, 100, 20, 200))
    write_raw(root, "a-new", lines("a-new", 0, 20, 200))
    write_raw(root, "big", lines("big", 1000, 3000, 1000))
    write_raw(root, "z1", lines("z1", 100, 20, 200))
    code, out, err = run_limited(["backup", dest], limit, root)
    assert code == 1 and out == "", (code, out, err)
    assert len(err.splitlines()) == 1 and err.startswith("jmirror: ") and "big" in err, err
    note("append past RLIMIT_FSIZE: %r" % err.strip())
    assert_previous_state(dest, old)

    # A file copied whole fails part-way: the previous copy must survive.
    write_raw(root, "big", lines("big", 0, 3000, 1000, tag="rewritten"), "wb")
    code, out, err = run_limited(["backup", dest], limit, root)
    assert code == 1, (code, out, err)
    assert [l for l in err.splitlines() if "copied whole" not in l][0].startswith("jmirror: ")
    assert len([l for l in err.splitlines() if "copied whole" not in l]) == 1, err
    assert_previous_state(dest, old)

    j = backup_ok(root, dest, quiet=False)
    assert j["recopied"] == 1, j
    assert_backup_exact(root, dest)


def test_disk_full_at_the_manifest(tmp):
    """Everything copied, then the manifest cannot be written: every append
    is cut back and the file copied whole is not put in place."""
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    for i in range(150):
        write_raw(root, "f%03d" % i, lines("f%03d" % i, 0, 2, 50))
    backup_ok(root, dest)
    old = read(os.path.join(dest, "MANIFEST.json"))
    limit = 16 << 10
    assert len(old) > 2 * limit and max(e["bytes"] for e in entries(dest).values()) < limit
    for i in range(0, 150, 2):
        write_raw(root, "f%03d" % i, lines("f%03d" % i, 10, 1, 50))
    write_raw(root, "f001", lines("f001", 0, 3, 60, tag="other"), "wb")
    code, out, err = run_limited(["backup", dest], limit, root)
    assert code == 1, (code, out, err)
    errs = [l for l in err.splitlines() if "copied whole" not in l]
    assert len(errs) == 1 and "MANIFEST.json" in errs[0], err
    note("manifest past RLIMIT_FSIZE: %r" % errs[0])
    assert_previous_state(dest, old)
    assert not [n for n in os.listdir(os.path.join(dest, "journal")) if n.startswith(".")]
    j = backup_ok(root, dest, quiet=False)
    assert j["appended"] == 75 and j["recopied"] == 1, j
    assert_backup_exact(root, dest)


def test_disk_full_mirror_snapshot(tmp):
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    for i in range(20):
        write_raw(root, "c%02d" % i, lines("c%02d" % i, 0, 200, 300))
    r = run_cli("ingest", root=root)
    assert r.code == 0, r
    j = backup_ok(root, dest, "--with-mirror")
    assert j["mirror_bytes"] > 1 << 20, j
    old = read(os.path.join(dest, "MANIFEST.json"))
    old_snap = read(os.path.join(dest, "mirror", "mirror.db"))
    for i in range(20):
        write_raw(root, "c%02d" % i, lines("c%02d" % i, 500, 5, 300))
    assert run_cli("ingest", root=root).code == 0
    code, out, err = run_limited(["backup", dest, "--with-mirror"], 1 << 20, root)
    assert code == 1 and len(err.splitlines()) == 1, (code, err)
    note("mirror snapshot past RLIMIT_FSIZE: %r" % err.strip())
    assert_previous_state(dest, old)
    assert read(os.path.join(dest, "mirror", "mirror.db")) == old_snap
    assert os.listdir(os.path.join(dest, "mirror")) == ["mirror.db"]
    assert check(dest)[1]["mirror"] is True


def test_missing_root_or_journal(tmp):
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    # no root at all: an error, nothing created
    r = run_cli("backup", dest, root=root)
    assert r.code == 1 and len(r.err.splitlines()) == 1 and root in r.err, r
    assert not os.path.exists(dest)
    # a root without journal/: an empty backup
    os.makedirs(root)
    j = backup_ok(root, dest)
    assert j["files"] == 0 and j["bytes_total"] == 0, j
    assert manifest(dest)["files"] == []
    check_ok(dest)
    # journal/ gone after a backup: every file kept, listed as gone
    for i in range(3):
        write_raw(root, "c%d" % i, lines("c%d" % i, 0, 5))
    backup_ok(root, dest)
    saved = {c: read(dfile(dest, c)) for c in ("c0", "c1", "c2")}
    shutil.rmtree(os.path.join(root, "journal"))
    r, j = backup(root, dest)
    assert r.code == 0 and j["kept"] == 3 and j["files"] == 3, r
    assert all(e.get("gone") is True for e in entries(dest).values())
    assert {c: read(dfile(dest, c)) for c in saved} == saved
    check_ok(dest)


# --------------------------------------------------------------------------
# 6. --with-mirror: a consistent snapshot, never the raw live file.

def dump(db, ro=True):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True) if ro else sqlite3.connect(db)
    try:
        return {t: con.execute("SELECT * FROM %s ORDER BY %s" % (t, o)).fetchall()
                for t, o in (("conversations", "id"), ("messages", "conversation_id, seq"),
                             ("bad_lines", "conversation_id, line"))}
    finally:
        con.close()


def test_with_mirror(tmp):
    root, dest, stop = (os.path.join(tmp, n) for n in ("root", "dest", "stop"))
    for i in range(5):
        write_raw(root, "s%d" % i, lines("s%d" % i, 0, 50, 200))
    write_raw(root, "s0", b"not json\n")
    write_raw(root, "w1", lines("w1", 0, 3))
    with Daemon(root):
        wait_verify_clean(root, 30)
        w = start_writer(root=root, seed=1, stop=stop, pace=0.002, split_p=0.2,
                         maxlen=40, convs=["s%d" % i for i in range(5)] + ["w1"], lines=3000)
        try:
            snaps = []
            for i in range(3):
                n0 = message_count(root) or 0
                wait_until(lambda: (message_count(root) or 0) > n0 + 20, 20, "the daemon to ingest")
                j = backup_ok(root, dest, "--with-mirror")
                snap = os.path.join(dest, "mirror", "mirror.db")
                assert j["mirror_bytes"] == os.path.getsize(snap), j
                assert sorted(os.listdir(os.path.join(dest, "mirror"))) == ["mirror.db"]
                assert_private(dest)
                con = sqlite3.connect("file:%s?mode=ro" % snap, uri=True)
                assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
                con.close()
                j = check_ok(dest)
                assert j["mirror"] is True, j
                # consistent: against the live root it is at most behind
                copy = os.path.join(tmp, "snap%d.db" % i)
                shutil.copyfile(snap, copy)
                r = run_cli("--mirror", copy, "verify", "--json", root=root)
                v = json.loads(r.out)
                assert r.code == 0 and v["drift"] == 0, r
                snaps.append((v["ok"], v["behind"]))
                shutil.copytree(dest, os.path.join(tmp, "restored%d" % i))
        finally:
            with open(stop, "w"):
                pass
            try:
                w.wait(30)
            finally:
                kill_proc(w)
        wait_verify_clean(root, 60)
        # Each backup restored as it is: its journal holds every line the
        # snapshot has rows for (taken first, the snapshot is never ahead)
        for i in range(3):
            r = run_cli("verify", "--json", root=os.path.join(tmp, "restored%d" % i))
            v = json.loads(r.out)
            assert r.code == 0 and v["drift"] == 0, r
        # Quiet now: the snapshot holds exactly the live mirror's rows, which
        # the raw main file alone (its -wal left behind) may not.
        live = mirror_db(root)
        wal = live + "-wal"
        wal_size = os.path.getsize(wal) if os.path.exists(wal) else 0
        raw = os.path.join(tmp, "raw.db")
        shutil.copyfile(live, raw)
        j = backup_ok(root, dest, "--with-mirror")
        snap = os.path.join(dest, "mirror", "mirror.db")
        want = dump(live)
        assert dump(snap) == want
        assert len(want["messages"]) > 250 and want["bad_lines"], len(want["messages"])
        assert sha(read(snap)) != sha(read(live))
        try:
            raw_rows = dump(raw, ro=False)
        except sqlite3.Error:
            raw_rows = None
        note("live mirror: %d bytes + %d bytes of -wal; its main file alone %s the rows; "
             "snapshots under writes (ok, behind): %s"
             % (os.path.getsize(live), wal_size,
                "holds" if raw_rows == want else "does not hold", snaps))
        if raw_rows != want:
            assert wal_size > 0
        # a damaged snapshot is found; the next backup takes a new one
        flip(snap, os.path.getsize(snap) // 2)
        code, j, r = check(dest)
        assert code == 1 and j["mirror"] is False and \
            [p["file"] for p in j["problems"]] == ["mirror/mirror.db"], r
        backup_ok(root, dest, "--with-mirror")
        assert check_ok(dest)["mirror"] is True


# --------------------------------------------------------------------------
# 7. Conversations gone from the root.

def test_gone_kept(tmp):
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    for cid in ("g1", "g2", "g3", "keep"):
        write_raw(root, cid, lines(cid, 0, 20, 100))
    backup_ok(root, dest)
    saved = {c: read(dfile(dest, c)) for c in ("g1", "g2", "g3")}
    for c in ("g1", "g2", "g3"):
        os.unlink(jfile(root, c))
    r, j = backup(root, dest)
    assert r.code == 0 and j["kept"] == 3 and j["files"] == 4 and j["bytes_copied"] == 0, r
    assert sorted(x["file"] for x in j["reports"]) == ["g1", "g2", "g3"], j
    assert all("gone from the root" in x["what"] for x in j["reports"]), j
    assert_backup_exact(root, dest, gone=("g1", "g2", "g3"))
    assert {c: read(dfile(dest, c)) for c in saved} == saved
    # once said is enough
    r, j = backup(root, dest)
    assert r.code == 0 and j["kept"] == 3 and j["reports"] == [] and r.err == "", r
    # g1 comes back as it was, and grows: appended
    write_raw(root, "g1", saved["g1"] + lines("g1", 20, 3, 100), "wb")
    # g2 comes back as another conversation: copied whole, reported
    write_raw(root, "g2", lines("g2", 0, 40, 100, tag="again"), "wb")
    r, j = backup(root, dest)
    assert r.code == 0, r
    assert j["appended"] == 1 and j["recopied"] == 1 and j["kept"] == 1, j
    assert [x["file"] for x in j["reports"]] == ["g2"], j
    assert_backup_exact(root, dest, gone=("g3",))
    # and g3 comes back empty (a new file with nothing in it yet)
    write_raw(root, "g3", b"", "wb")
    r, j = backup(root, dest)
    assert r.code == 0 and j["recopied"] == 1 and j["kept"] == 0, r
    assert_backup_exact(root, dest)


# --------------------------------------------------------------------------
# 8. The restore drill.

def test_restore_from_plain_copies(tmp):
    root, copy, stop = (os.path.join(tmp, n) for n in ("root", "copy", "stop"))
    convs = ["t%d" % i for i in range(6)]
    for c in convs:
        write_raw(root, c, lines(c, 0, 5, 100))
    write_raw(root, "torn", lines("torn", 0, 5, 100))
    os.makedirs(os.path.join(copy, "journal"))
    w = start_writer(root=root, seed=3, stop=stop, pace=0.001, split_p=0.8, split=0.002,
                     maxlen=40, convs=convs, lines=20000)
    torn = 0
    try:
        for c in convs + ["torn"]:
            if c == "torn":   # certainly a torn tail: half a line when copied
                ev = event("torn", 99, 300)
                write_raw(root, "torn", ev[:len(ev) // 2])
            shutil.copyfile(jfile(root, c), jfile(copy, c))
            if c == "torn":
                write_raw(root, "torn", ev[len(ev) // 2:])
            torn += not read(jfile(copy, c)).endswith(b"\n")
            size0 = os.path.getsize(jfile(root, convs[0]))
            wait_until(lambda: os.path.getsize(jfile(root, convs[0])) > size0, 20,
                       "the writer to go on")
    finally:
        with open(stop, "w"):
            pass
        try:
            w.wait(30)
        finally:
            kill_proc(w)
    files = {c: read(jfile(copy, c)) for c in convs + ["torn"]}
    with Daemon(copy):
        wait_verify_clean(copy, 60)
        for c, data in files.items():
            n = data.count(b"\n")
            assert message_count(copy, c) == n, (c, message_count(copy, c), n)
            assert read(jfile(copy, c)) == data   # torn tails left alone
            off = query(copy, "SELECT byte_offset FROM sources WHERE conversation_id = ?", (c,))
            assert off == [(len(complete(data)),)], (c, off)
        assert query(copy, "SELECT count(*) FROM bad_lines") == [(0,)]
        # the next append turns the torn tail into a bad line of its own
        r = run_cli("append", "torn", json.dumps({"type": "message", "id": "after",
                                                  "role": "user", "content": "intact"}),
                    root=copy)
        assert r.code == 0, r
        n = files["torn"].count(b"\n")
        wait_until(lambda: message_count(copy, "torn") == n + 1, 20, "the new event")
        wait_verify_clean(copy, 30)
        assert query(copy, "SELECT content FROM messages WHERE conversation_id='torn' AND "
                           "id='after'") == [("intact",)]
        bad = query(copy, "SELECT line, byte_offset, reason FROM bad_lines")
        assert bad == [(n + 1, len(complete(files["torn"])), "invalid_json")], bad
        after = read(jfile(copy, "torn"))
        assert after.startswith(files["torn"] + b"\n") and after.count(b"\n") == n + 2
    note("plain copies taken while a writer appended: %d of %d with a torn tail"
         % (torn, len(files)))


def test_restore_from_backup(tmp):
    root, dest, fresh = (os.path.join(tmp, n) for n in ("root", "dest", "fresh"))
    rnd = random.Random(8)
    for i in range(12):
        c = "r%02d" % i
        write_raw(root, c, lines(c, 0, rnd.randint(1, 60), rnd.choice([10, 500])))
        r = run_cli("append", c, json.dumps({"type": "message.delta", "id": "d", "text": "str"}),
                    root=root)
        assert r.code == 0, r
    write_raw(root, "r03", b"{broken\n")
    write_raw(root, "r04", b'{"type":"message","id":"pending"')   # a pending tail
    assert run_cli("ingest", root=root).code == 0
    backup_ok(root, dest)
    os.makedirs(fresh)
    shutil.copytree(os.path.join(dest, "journal"), os.path.join(fresh, "journal"))
    r = run_cli("replay", "--all", root=fresh)
    assert r.code == 0, r
    code, j, r = verify(fresh)
    assert code == 0 and j["drift"] == 0 and j["behind"] == 0 and j["checked"] == 12, r
    a, b = dump(mirror_db(root)), dump(mirror_db(fresh))
    assert a == b
    assert len(a["bad_lines"]) == 1 and len(a["messages"]) > 12, a["bad_lines"]


# --------------------------------------------------------------------------
# 9. A journal file replaced by an older copy.

def test_older_copy_detected(tmp):
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    for c in ("o1", "o2"):
        write_raw(root, c, lines(c, 0, 10, 100))
    backup_ok(root, dest)
    for c in ("o1", "o2"):
        write_raw(root, c, lines(c, 10, 5, 100))
    assert run_cli("ingest", root=root).code == 0
    assert message_count(root, "o1") == 15
    shutil.copyfile(dfile(dest, "o1"), jfile(root, "o1"))
    r = run_cli("ingest", "--json", root=root)
    assert r.code == 0 and json.loads(r.out)["replayed"] == 1, r
    assert message_count(root, "o1") == 10
    code, j, r = verify(root)
    assert code == 0 and j["drift"] == 0, r

    # the daemon, too: an older copy renamed into place, and one copied over
    # the file after the file grew beyond what the copy would reach
    with Daemon(root) as d:
        wait_verify_clean(root, 30)
        for c in ("o1", "o2"):
            write_raw(root, c, lines(c, 100, 20, 100))
        wait_until(lambda: message_count(root, "o1") == 30 and message_count(root, "o2") == 35,
                   20, "the appends")
        tmpf = os.path.join(root, "journal", ".o1.tmp")
        shutil.copyfile(dfile(dest, "o1"), tmpf)
        os.replace(tmpf, jfile(root, "o1"))
        shutil.copyfile(dfile(dest, "o2"), jfile(root, "o2"))
        wait_until(lambda: message_count(root, "o1") == 10 and message_count(root, "o2") == 10,
                   20, "the daemon to replay the older copies")
        wait_verify_clean(root, 30)
        log = d.log_text()
        assert "'o1' changed under the mirror" in log, log
        assert "'o2' changed under the mirror" in log, log


# --------------------------------------------------------------------------
# 10. Progress on a terminal only.

def test_progress_only_on_a_tty(tmp):
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    for i in range(10):
        write_raw(root, "p%d" % i, lines("p%d" % i, 0, 500, 500))
    env = dict(os.environ)
    env.pop("JMIRROR_NO_PROGRESS", None)
    r = run_cli("backup", dest, root=root, env=env)
    assert r.code == 0 and r.err == "" and r.out.startswith("backed up 10 files"), r
    r = run_cli("backup", "--check", dest, env=env)
    assert r.code == 0 and r.err == "", r

    def on_pty(args):
        mfd, sfd = pty.openpty()
        try:
            p = subprocess.Popen([JMIRROR, "--root", root] + args, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=sfd, env=env)
        finally:
            os.close(sfd)
        chunks = []
        try:
            while True:
                try:
                    b = os.read(mfd, 65536)
                except OSError:   # EIO: the child's end is closed
                    break
                if not b:
                    break
                chunks.append(b)
            out = p.stdout.read()
            p.wait(60)
        finally:
            kill_proc(p)
            p.stdout.close()
            os.close(mfd)
        return p.returncode, out, b"".join(chunks)

    shutil.rmtree(dest)
    code, out, tty = on_pty(["backup", dest])
    assert code == 0 and out.startswith(b"backed up 10 files"), (code, out, tty)
    assert b"\rbackup [" in tty and b"%" in tty and b"MB" in tty, tty
    code, out, tty = on_pty(["backup", "--check", dest])
    assert code == 0 and b"\rcheck [" in tty, (code, out, tty)
    note("progress on a pty: %r" % tty[:120])


if __name__ == "__main__":
    run(globals())
