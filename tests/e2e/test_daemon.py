"""End-to-end tests of jmirrord: the real daemon on real files.

Every test starts its own daemon on a temporary root (stderr captured to a
file), drives it with the real jmirror binary, plain file operations and the
control socket, and checks the mirror with Python's own sqlite3 module and
`jmirror verify`.  Waiting on the daemon is always a poll with a deadline;
the only sleeps are the random kill points of the crash test and the idle
window whose wake-ups are counted.
"""
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (JMIRROR, JMIRRORD, Control, Daemon, control, message_count,  # noqa: E402
                     mirror_db, query, run, run_cli, sock_path, verify, wait_rows,
                     wait_until, wait_verify_clean)


def msg(mid, content, **extra):
    ev = {"type": "message", "id": mid, "role": "user", "content": content}
    ev.update(extra)
    return json.dumps(ev, ensure_ascii=False)


def delta(mid, text):
    return json.dumps({"type": "message.delta", "id": mid, "text": text}, ensure_ascii=False)


def end(mid):
    return json.dumps({"type": "message.end", "id": mid, "stop_reason": "end_turn"})


def jfile(root, cid):
    return os.path.join(root, "journal", cid + ".jsonl")


def append(root, cid, *events):
    """Append with the real CLI (stdin bulk mode for several events)."""
    if len(events) == 1 and len(events[0]) < 100000:
        r = run_cli("append", cid, events[0], "--sync", "none", root=root)
    else:
        r = run_cli("append", cid, "-", "--sync", "none", root=root,
                    stdin="".join(e + "\n" for e in events))
    assert r.code == 0, r
    return r


def write_lines(path, lines, mode="ab"):
    """Write journal lines by hand (any program may, per the format)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, mode) as f:
        f.write("".join(l + "\n" for l in lines).encode("utf-8"))


def ts(n):
    return "2026-01-01T%02d:%02d:%02d.%06dZ" % (n // 3600 % 24, n // 60 % 60, n % 60, n % 1000000)


def conv_ids(root):
    return sorted(r[0] for r in query(root, "SELECT id FROM conversations"))


def integrity_ok(root):
    return query(root, "PRAGMA integrity_check") == [("ok",)]


def note(text):
    print("# " + text, flush=True)


def assert_verify_clean(root, nconv=None):
    code, j, r = verify(root)
    assert code == 0 and j is not None, r
    assert j["drift"] == 0 and j["behind"] == 0 and j["ok"] == j["checked"], r
    if nconv is not None:
        assert j["checked"] == nconv, r


def wait_status(root, pred, timeout, what):
    return wait_until(lambda: (lambda s: s if pred(s) else None)(control(root, {"cmd": "status"})),
                      timeout, what)


# --------------------------------------------------------------------------
# Appends while running.

def test_append_visible_while_running(tmp):
    root = os.path.join(tmp, "root")
    with Daemon(root) as d:
        lat, total = [], []
        for i in range(20):
            t0 = time.monotonic()
            append(root, "c1", msg("m%d" % i, "hello %d ü 😀" % i))
            t1 = time.monotonic()
            wait_rows(root, i + 1, timeout=10, conv="c1")
            t2 = time.monotonic()
            lat.append((t2 - t1) * 1000)
            total.append((t2 - t0) * 1000)
        note("row visible after the `jmirror append` process exited: median %.1f ms, max %.1f "
             "ms; from starting that process: median %.1f ms, max %.1f ms (%d appends)"
             % (statistics.median(lat), max(lat), statistics.median(total), max(total), len(lat)))
        rows = query(root, "SELECT id, content, status FROM messages WHERE conversation_id='c1' "
                           "ORDER BY seq")
        assert rows == [("m%d" % i, "hello %d ü 😀" % i, "complete") for i in range(20)], rows
        st = d.status()
        assert st["events_ingested"] == 20 and st["bytes_behind"] == 0, st
    assert_verify_clean(root, 1)


def test_many_conversations_concurrently(tmp):
    root = os.path.join(tmp, "root")
    nconv, writers, per = 50, 6, 40
    with Daemon(root):
        # Each writer process appends `per` events to every conversation, in
        # its own order, one bulk append per conversation: 6 processes write
        # into the same 50 files at once.
        script = ("import subprocess, sys, json, random\n"
                  "jm, root, w = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
                  "order = list(range(%d)); random.Random(w).shuffle(order)\n"
                  "for c in order:\n"
                  "    data = ''.join(json.dumps({'type': 'message', 'id': 'w%%d-%%d' %% (w, n),\n"
                  "        'role': 'user', 'content': 'c%%d w%%d n%%d' %% (c, w, n)}) + '\\n'\n"
                  "        for n in range(%d))\n"
                  "    p = subprocess.run([jm, '--root', root, 'append', 'conv-%%02d' %% c, '-',\n"
                  "        '--sync', 'none'], input=data.encode(), capture_output=True)\n"
                  "    assert p.returncode == 0, p\n" % (nconv, per))
        t0 = time.monotonic()
        procs = [subprocess.Popen([sys.executable, "-c", script, JMIRROR, root, str(w)])
                 for w in range(writers)]
        for p in procs:
            assert p.wait(300) == 0
        t1 = time.monotonic()
        total = nconv * writers * per
        wait_rows(root, total, timeout=60)
        t2 = time.monotonic()
        note("%d events into %d conversations from %d processes: written in %.2f s, "
             "all in the mirror %.0f ms later" % (total, nconv, writers, t1 - t0, (t2 - t1) * 1000))
        wait_verify_clean(root, 30)
        counts = query(root, "SELECT id, message_count FROM conversations ORDER BY id")
        assert counts == [("conv-%02d" % c, writers * per) for c in range(nconv)], counts
        bad = query(root, "SELECT count(*) FROM messages WHERE content != "
                          "'c' || CAST(substr(conversation_id, 6) AS INTEGER) || ' w' || "
                          "substr(id, 2, instr(id, '-') - 2) || ' n' || substr(id, instr(id, '-') + 1)")
        assert bad == [(0,)], bad
    assert_verify_clean(root, nconv)


# --------------------------------------------------------------------------
# kill -9 at random points while a writer keeps appending.

KILL_CONVS = ["k%02d" % i for i in range(20)]
# JM_NIGHTLY=1: the long version (tests/e2e/crashkit.py has the knob).
NIGHTLY = os.environ.get("JM_NIGHTLY", "") not in ("", "0")
N_DAEMON_KILLS = 500 if NIGHTLY else 50


def writer_main(root, acks, stop, seed):
    """The writer of the crash test: appends with the real CLI until `stop`
    exists; after every acknowledged append it records what the mirror must
    hold: [conversation, message id, content, status]."""
    rnd = random.Random(seed)
    alphabet = "abcdefghij klmnopqrstuvwxyz ü한😀\"\\\n\t"
    n = 0
    with open(acks, "a", encoding="utf-8") as out:
        while not os.path.exists(stop):
            n += 1
            cid = rnd.choice(KILL_CONVS)
            kind = rnd.random()

            def text():
                k = rnd.choice([0, 1, 10, 100, 1000, 3000])
                if rnd.random() < 0.01:
                    k = 200000
                return "".join(rnd.choice(alphabet) for _ in range(min(k, 64))) * (k // 64 + 1)

            if kind < 0.4:
                mid, c = "s%d" % n, text()
                lines, expect = [msg(mid, c)], [(mid, c)]
            elif kind < 0.8:
                expect = [("b%d.%d" % (n, i), text()) for i in range(rnd.randint(2, 30))]
                lines = [msg(m, c) for m, c in expect]
            else:
                mid = "d%d" % n
                parts = [text()[:rnd.randint(0, 50)] for _ in range(rnd.randint(1, 12))]
                lines = [delta(mid, p) for p in parts] + [end(mid)]
                expect = [(mid, "".join(parts))]
            if len(lines) == 1 and len(lines[0]) < 100000:
                r = run_cli("append", cid, lines[0], "--sync", "none", root=root)
            else:
                r = run_cli("append", cid, "-", "--sync", "none", root=root,
                            stdin="".join(l + "\n" for l in lines))
            if r.code != 0:
                print("writer: append failed: %r" % r, file=sys.stderr)
                sys.exit(1)
            for mid, c in expect:
                out.write(json.dumps([cid, mid, c]) + "\n")
            out.flush()


def test_kill9_while_writing(tmp):
    root = os.path.join(tmp, "root")
    acks, stop = os.path.join(tmp, "acks"), os.path.join(tmp, "stop")
    seed = int(os.environ.get("JM_SEED", random.randrange(1 << 30)))
    note("seed %d (JM_SEED=%d reproduces the kill points)" % (seed, seed))
    rnd = random.Random(seed)
    log = os.path.join(tmp, "jmirrord.log")
    t_start = time.monotonic()
    writer = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--writer", root,
                               acks, stop, str(seed)])
    d = None
    grew, before_ready = [], 0
    try:
        wait_until(lambda: os.path.exists(acks) and os.path.getsize(acks) > 0, 30,
                   "the writer's first append")
        for i in range(N_DAEMON_KILLS):
            d = Daemon(root, log=log).spawn()
            if rnd.random() < 0.6:
                d.wait_ready()
            else:
                before_ready += 1
            # The random kill point itself (not a synchronisation).
            time.sleep(rnd.uniform(0, 0.4))
            assert d.alive(), "jmirrord died on its own:\n" + d.log_text()
            d.kill()
            grew.append(message_count(root))
            assert writer.poll() is None, "the writer stopped early"
        open(stop, "w").close()
        assert writer.wait(60) == 0
        with open(acks, encoding="utf-8") as f:
            acked = [json.loads(l) for l in f]
        d = Daemon(root, log=log).start()
        wait_rows(root, len(acked), timeout=60)
        wait_verify_clean(root, 30)
        code, took = d.stop()
        assert code == 0, d.log_text()
    finally:
        open(stop, "w").close()
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        if d is not None:
            d.kill()
    note("%d kills (%d before the socket answered) while the writer appended %d messages; "
         "the mirror held %s messages at the kills; whole test %.1f s"
         % (N_DAEMON_KILLS, before_ready, len(acked), ",".join(str(g) for g in grew[::5]),
            time.monotonic() - t_start))
    # Nothing lost, nothing doubled: exactly the acknowledged messages, with
    # exactly the acknowledged content (a delta applied twice would show).
    rows = query(root, "SELECT conversation_id, id, content, status FROM messages")
    want = {(c, m): t for c, m, t in acked}
    assert len(want) == len(acked)
    got = {(c, m): t for c, m, t, _ in rows}
    assert len(rows) == len(got)
    missing = set(want) - set(got)
    extra = set(got) - set(want)
    assert not missing and not extra, (sorted(missing)[:10], sorted(extra)[:10])
    wrong = [k for k in want if want[k] != got[k]]
    assert not wrong, [(k, len(want[k]), len(got[k])) for k in wrong[:10]]
    assert all(r[3] == "complete" for r in rows)
    counts = query(root, "SELECT c.id, c.message_count, (SELECT count(*) FROM messages m "
                         "WHERE m.conversation_id = c.id) FROM conversations c")
    assert all(a == b for _, a, b in counts), counts
    assert integrity_ok(root)
    r = run_cli("verify", root=root)
    assert r.code == 0 and "0 behind, 0 drift" in r.out, r
    assert NIGHTLY or time.monotonic() - t_start < 120, "the crash test took over 2 minutes"


# --------------------------------------------------------------------------
# Files changed behind the writer's back.

def test_truncated_replaced_deleted(tmp):
    root = os.path.join(tmp, "root")
    with Daemon(root) as d:
        lines = [msg("m%d" % i, "line %d" % i, ts=ts(i)) for i in range(30)]
        append(root, "a", *lines)
        append(root, "keep", msg("k1", "untouched"))
        wait_rows(root, 30, conv="a")
        path = jfile(root, "a")
        data = open(path, "rb").read()
        offs = [i + 1 for i, b in enumerate(data) if b == 0x0A]
        # Truncated to 20 lines.
        with open(path, "r+b") as f:
            f.truncate(offs[19])
        wait_rows(root, 20, conv="a")
        wait_verify_clean(root)
        # Truncated in the middle of line 16: 15 lines and a pending tail.
        with open(path, "r+b") as f:
            f.truncate(offs[14] + 7)
        wait_rows(root, 15, conv="a")
        wait_verify_clean(root)
        # Replaced by an older copy (10 lines), renamed over it.
        old = os.path.join(tmp, "a.old")
        with open(old, "wb") as f:
            f.write(data[:offs[9]])
        os.rename(old, path)
        wait_rows(root, 10, conv="a")
        wait_verify_clean(root)
        # Replaced by a file of the same size with other bytes.
        same = data[:offs[9]].replace(b'"line ', b'"LINE ')
        assert len(same) == offs[9]
        with open(old, "wb") as f:
            f.write(same)
        os.rename(old, path)
        wait_until(lambda: query(root, "SELECT count(*) FROM messages WHERE conversation_id='a' "
                                       "AND content GLOB 'LINE *'") == [(10,)], 20,
                   "the same-size replacement to be replayed")
        wait_verify_clean(root)
        # Truncated and grown past the old size before anyone looked.
        with open(path, "r+b") as f:
            f.truncate(offs[2])
        write_lines(path, [msg("n%d" % i, "new %d" % i, ts=ts(100 + i)) for i in range(40)])
        wait_rows(root, 43, conv="a")
        wait_verify_clean(root)
        ids = [r[0] for r in query(root, "SELECT id FROM messages WHERE conversation_id='a' "
                                         "ORDER BY seq")]
        assert ids == ["m0", "m1", "m2"] + ["n%d" % i for i in range(40)], ids
        # Deleted.
        os.unlink(path)
        wait_until(lambda: conv_ids(root) == ["keep"], 20, "the rows of 'a' to go")
        assert message_count(root) == 1
        wait_verify_clean(root)
        assert d.status()["replays"] == 0  # replays counts control requests only
    assert "changed under the mirror" in d.log_text(), d.log_text()
    assert_verify_clean(root, 1)


def test_huge_line(tmp):
    root = os.path.join(tmp, "root")
    big = "".join(chr(0x41 + i % 26) for i in range(5 * 1024 * 1024 - 1)) + "é"
    with Daemon(root):
        append(root, "big", msg("small", "before"))
        t0 = time.monotonic()
        append(root, "big", msg("huge", big), msg("after", "after"))
        t1 = time.monotonic()
        wait_rows(root, 3, timeout=60, conv="big")
        note("a 5 MB line: appended in %.2f s, in the mirror %.0f ms later"
             % (t1 - t0, (time.monotonic() - t1) * 1000))
        rows = query(root, "SELECT id, length(content), content = ? FROM messages "
                           "WHERE conversation_id='big' ORDER BY seq", (big,))
        assert rows == [("small", 6, 0), ("huge", len(big), 1), ("after", 5, 0)], rows
        assert os.path.getsize(jfile(root, "big")) > 5 * 1024 * 1024
        wait_verify_clean(root, 60)


def test_ignored_names(tmp):
    root = os.path.join(tmp, "root")
    jdir = os.path.join(root, "journal")
    ev = [msg("m1", "not ingested", ts=ts(1))]
    write_lines(os.path.join(jdir, "Bad.jsonl"), ev)
    write_lines(os.path.join(jdir, "notes.txt"), ["just notes"])
    write_lines(jfile(root, "good"), [msg("g1", "ingested", ts=ts(2))])
    with Daemon(root) as d:
        wait_rows(root, 1, conv="good")
        assert d.status()["ignored_files"] == 2, d.status()
        # More odd names while it runs: it carries on with the good ones.
        for name in ["UPPER.jsonl", ".hidden.jsonl", "a b.jsonl", "x.jsonl.tmp", "noext"]:
            write_lines(os.path.join(jdir, name), ev)
        os.mkdir(os.path.join(jdir, "subdir"))
        append(root, "good", msg("g2", "still ingested"))
        wait_rows(root, 2, conv="good")
        st = wait_status(root, lambda s: s["ignored_files"] == 8, 20,
                         "status to count 8 ignored files")
        assert st["files_tracked"] == 1, st
        r = run_cli("status", "--json", root=root)
        assert r.code == 0, r
        j = json.loads(r.out)
        assert j["daemon"] is True and j["ignored_files"] == 8, j
        assert conv_ids(root) == ["good"]
        assert d.alive()
        assert_verify_clean(root, 1)
    r = run_cli("status", "--json", root=root)
    j = json.loads(r.out)
    assert j["daemon"] is False and j["ignored_files"] == 8, j


def test_special_files_with_valid_names(tmp):
    # A directory, a FIFO and a symlink named like journal files are not
    # journal files (as for the scan): ignored, never opened (a FIFO would
    # block whoever opens it), and the daemon carries on and stops on time.
    root = os.path.join(tmp, "root")
    jdir = os.path.join(root, "journal")
    append(root, "a", msg("a1", "x"))
    append(root, "gone", msg("g1", "x"))
    with Daemon(root) as d:
        wait_rows(root, 2)
        os.mkdir(os.path.join(jdir, "dir.jsonl"))
        os.mkfifo(os.path.join(jdir, "fifo.jsonl"))
        os.symlink(jfile(root, "a"), os.path.join(jdir, "link.jsonl"))
        # A conversation's file replaced by a directory: its rows go.
        os.unlink(jfile(root, "gone"))
        os.mkdir(jfile(root, "gone"))
        append(root, "a", msg("a2", "y"))
        wait_rows(root, 2, timeout=10, conv="a")
        wait_until(lambda: conv_ids(root) == ["a"], 10, "the rows of 'gone' to go")
        # A wait for one of them times out instead of hanging the daemon.
        a = control(root, {"cmd": "wait", "id": "fifo", "offset": 1, "timeout_ms": 200})
        assert a["ok"] is False and a["error"] == "timed out", a
        # 'gone' may have been tried once while it was missing and failed
        # as a directory (an error, retried once): in the end only 'a' is
        # tracked, nothing is queued and nothing keeps failing.
        wait_status(root, lambda s: s["ignored_files"] == 4 and s["files_tracked"] == 1 and
                    s["queued"] == 0, 10, "4 ignored files and 1 tracked")
        retries = d.log_text().count("retrying")
        assert retries <= 1, d.log_text()
        append(root, "a", msg("a3", "z"))
        wait_rows(root, 3, timeout=10, conv="a")
        wait_verify_clean(root)
        assert d.log_text().count("retrying") == retries, d.log_text()
    # (leaving the with block stopped it with SIGTERM: exit 0 within 10 s)


# --------------------------------------------------------------------------
# journal/ itself going away.

def test_journal_dir_removed_and_recreated(tmp):
    root = os.path.join(tmp, "root")
    jdir = os.path.join(root, "journal")
    with Daemon(root, "-v") as d:
        append(root, "a", msg("a1", "a"), msg("a2", "a"))
        append(root, "b", msg("b1", "b"))
        wait_rows(root, 3)
        # Moved away in one step: the daemon notices, and keeps the rows
        # (a missing journal/ is an unmounted disk or a restore in progress,
        # not a deletion).
        os.rename(jdir, os.path.join(tmp, "journal.away"))
        wait_status(root, lambda s: s["journal_present"] is False, 20,
                    "status to say journal/ is missing")
        r = run_cli("status", root=root)
        assert r.code == 0 and "MISSING" in r.out, r
        assert conv_ids(root) == ["a", "b"] and message_count(root) == 3
        # A `wait` (what a writer's read-your-writes does) cannot be met
        # now, and must not make the daemon look for the file either.
        a = control(root, {"cmd": "wait", "id": "a", "offset": 10 ** 6, "timeout_ms": 300})
        assert a["ok"] is False and a["error"] == "timed out", a
        assert conv_ids(root) == ["a", "b"] and message_count(root) == 3
        # Created again, with other files: the daemon resumes; the mirror
        # holds exactly the new files (a and b are gone now that journal/ is
        # back, so their rows go).
        os.mkdir(jdir, 0o700)
        write_lines(jfile(root, "c"), [msg("c1", "c", ts=ts(1))])
        append(root, "d", msg("d1", "d"), msg("d2", "d"))
        wait_until(lambda: conv_ids(root) == ["c", "d"], 20, "the mirror to hold c and d only")
        wait_rows(root, 3)
        st = wait_status(root, lambda s: s["journal_present"] is True, 20, "journal/ present")
        assert st["files_tracked"] == 2, st
        wait_verify_clean(root)
        # Appends are seen again through the new watch.
        append(root, "c", msg("c2", "c"))
        wait_rows(root, 2, conv="c")
        # Deleted with its files (rmtree: each file first, then the
        # directory), recreated empty, then a new file: whatever the daemon
        # saw in between, the end state is the new file alone.
        shutil.rmtree(jdir)
        wait_status(root, lambda s: s["journal_present"] is False, 20,
                    "status to say journal/ is missing")
        os.mkdir(jdir, 0o700)
        wait_status(root, lambda s: s["journal_present"] is True, 20, "journal/ present again")
        append(root, "e", msg("e1", "e"))
        wait_until(lambda: conv_ids(root) == ["e"], 20, "the mirror to hold e only")
        wait_rows(root, 1)
        # Replaced: renamed away and a new one made at once.
        os.rename(jdir, os.path.join(tmp, "journal.old"))
        os.mkdir(jdir, 0o700)
        append(root, "f", msg("f1", "f"))
        wait_until(lambda: conv_ids(root) == ["f"], 20, "the mirror to hold f only")
        append(root, "f", msg("f2", "f"))
        wait_rows(root, 2, conv="f")
        wait_verify_clean(root)
        assert d.alive()
    log = d.log_text()
    assert "is missing" in log and "is back" in log, log


def test_damaged_mirror_at_start(tmp):
    """A mirror whose first page is garbage: jmirrord sets it aside (one
    warning line naming it), starts anew and ingests every file."""
    root = os.path.join(tmp, "root")
    for i in range(3):
        for k in range(4):
            append(root, "c%d" % i, msg("m%d" % k, "text %d" % k))
    with Daemon(root):
        wait_rows(root, 12, timeout=10)
    db = mirror_db(root)
    with open(db, "r+b") as f:
        f.write(b"garbage where the header was....")
    with Daemon(root, "-v") as d:
        wait_rows(root, 12, timeout=10)
        assert d.alive()
    log = d.log_text()
    assert log.count("was damaged") == 1 and db + ".damaged" in log, log
    assert os.path.exists(db + ".damaged")
    assert_verify_clean(root, 3)


def test_mirror_deleted_under_daemon(tmp):
    """mirror.db, or its -wal, deleted while jmirrord runs: the daemon would
    go on writing to a file nobody sees.  It notices before its next job
    (a verify --repair it is asked to do, an ingest, a SIGHUP reconcile),
    reopens what is at the path and rebuilds it from the journal."""
    root = os.path.join(tmp, "root")
    db = mirror_db(root)
    with Daemon(root, "-v") as d:
        for k in range(5):
            append(root, "c%d" % (k % 2), msg("m%d" % k, "text %d" % k))
        wait_rows(root, 5, timeout=10)
        # 1. the database deleted; verify --repair (carried out by the daemon)
        os.unlink(db)
        r = run_cli("verify", "--repair", root=root)
        assert r.code == 0, r
        assert_verify_clean(root, 2)
        assert message_count(root) == 5
        # 2. deleted again; the next append alone brings it back
        os.unlink(db)
        append(root, "c2", msg("m5", "text 5"))
        wait_verify_clean(root, 10)
        assert message_count(root) == 6
        # 3. its -wal deleted; a SIGHUP reconcile notices
        append(root, "c2", msg("m6", "text 6"))
        wait_rows(root, 7, timeout=10)
        if os.path.exists(db + "-wal"):
            os.unlink(db + "-wal")
        d.proc.send_signal(signal.SIGHUP)
        wait_verify_clean(root, 10)
        assert message_count(root) == 7
        assert d.alive()
    log = d.log_text()
    assert log.count("deleted or replaced under jmirrord") >= 3, log


def test_mirror_deleted_plain_verify(tmp):
    """mirror.db, or its -wal, deleted while jmirrord runs and nothing else
    happens: a plain `jmirror verify` (not --repair, which the daemon carries
    out) first has the daemon check its file, so the daemon reopens and
    rebuilds the mirror and verify sees every row; `status` notices too."""
    root = os.path.join(tmp, "root")
    db = mirror_db(root)
    with Daemon(root) as d:
        for k in range(6):
            append(root, "c%d" % (k % 3), msg("m%d" % k, "text %d" % k))
        wait_rows(root, 6, timeout=10)
        for n, victim in enumerate([db, db + "-wal", db]):
            if victim.endswith("-wal"):  # commits the -wal holds
                append(root, "c%d" % n, msg("w%d" % n, "wal %d" % n))
                wait_rows(root, 7, timeout=10)
            assert os.path.exists(victim), victim
            os.unlink(victim)
            t0 = time.monotonic()
            if n < 2:
                code, j, r = verify(root)  # the first verify is already clean
                took = time.monotonic() - t0
                assert code == 0 and j["checked"] == 3, r
                assert j["ok"] == 3 and j["behind"] == j["drift"] == 0, r
                assert took < 10, took
                assert "rebuilt it first" in r.err, r
            else:  # status alone: says so, and the rebuild follows
                st = d.status()
                assert st["mirror_replaced"] is True, st
                wait_status(root, lambda s: not s["mirror_replaced"], 10,
                            "the mirror to be reopened")
                wait_verify_clean(root, 10)
            assert message_count(root) == (7 if n else 6), n
        assert d.status()["mirror_replaced"] is False
        assert d.alive()
    log = d.log_text()
    assert log.count("deleted or replaced under jmirrord") == 3, log


def test_verify_not_ingested_is_behind(tmp):
    """A journal file the mirror has not ingested yet (a daemon a moment
    behind a new conversation) is behind, not drift: exit 0.  A file that
    no longer matches what was ingested stays drift: exit 1."""
    root = os.path.join(tmp, "root")
    append(root, "a", msg("m1", "one"))
    assert run_cli("ingest", root=root).code == 0
    append(root, "b", msg("m1", "new"))
    code, j, r = verify(root)
    by = {c["conversation"]: c for c in j["conversations"]}
    assert code == 0 and (j["ok"], j["behind"], j["drift"]) == (1, 1, 0), r
    assert by["b"]["state"] == "behind", by
    assert by["b"]["detail"].startswith("not in the mirror yet"), by
    assert by["b"]["mirror_offset"] == 0 and by["b"]["file_offset"] > 0, by
    r = run_cli("verify", root=root)
    assert r.code == 0 and "behind b: not in the mirror yet" in r.out, r
    # true drift next to it: a's bytes changed under the mirror
    with open(jfile(root, "a"), "r+b") as f:
        data = f.read()
        f.seek(0)
        f.write(data.replace(b"one", b"ONE"))
    code, j, r = verify(root)
    by = {c["conversation"]: c for c in j["conversations"]}
    assert code == 1 and (j["behind"], j["drift"]) == (1, 1), r
    assert by["a"]["state"] == "drift" and by["b"]["state"] == "behind", by
    # a conversation with rows but no record of its file is drift too
    db = sqlite3.connect(mirror_db(root))
    db.execute("DELETE FROM sources WHERE conversation_id = 'a'")
    db.commit()
    db.close()
    code, j, r = verify(root, "a")
    assert code == 1 and j["drift"] == 1, r
    assert "its conversation has rows" in j["conversations"][0]["detail"], r
    r = run_cli("verify", "--repair", root=root)
    assert r.code == 0, r
    assert_verify_clean(root, 2)


def test_verify_named_ids(tmp):
    """`verify <id>`: an id neither journal/ nor the mirror knows is an
    error naming it (exit 1); an id named twice is verified once.  The
    same through the daemon (verify --repair)."""
    root = os.path.join(tmp, "root")
    append(root, "a", msg("m1", "one"))
    assert run_cli("ingest", root=root).code == 0

    def check(*extra):
        r = run_cli("verify", *extra, "a", "nosuch", root=root)
        assert r.code == 1 and r.out == "", r
        assert "no conversation 'nosuch'" in r.err, r
        assert "journal/nosuch.jsonl" in r.err and len(r.err.splitlines()) == 1, r
        code, j, r = verify(root, *(extra + ("a", "a", "a")))
        assert code == 0 and j["checked"] == 1, r
        assert [c["conversation"] for c in j["conversations"]] == ["a"], r
    check()
    with Daemon(root):
        wait_verify_clean(root, 10)
        check("--repair")
        check()
    # known to the mirror only (its file gone): reported, not an error
    os.unlink(jfile(root, "a"))
    code, j, r = verify(root, "a")
    assert code == 1 and j["drift"] == 1, r
    assert "journal file is missing" in j["conversations"][0]["detail"], r


def test_second_daemon_refused(tmp):
    root = os.path.join(tmp, "root")
    with Daemon(root) as d:
        for r_ in [root, os.path.join(tmp, "link")]:
            if r_ != root:
                os.symlink(root, r_)
            t0 = time.monotonic()
            p = subprocess.run([JMIRRORD, "--root", r_], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, timeout=30)
            took = time.monotonic() - t0
            err = p.stderr.decode()
            assert p.returncode == 1, (p.returncode, err)
            assert "pid %d" % d.pid in err and "jmirrord" in err, err
            assert len(err.splitlines()) == 1, err
            assert took < 5, took
        # The first one is unharmed: its socket still answers.
        assert d.status()["pid"] == d.pid
        append(root, "c", msg("m", "x"))
        wait_rows(root, 1)


def sockets_under(top):
    import stat
    found = []
    for dirpath, dirs, files in os.walk(top):
        for n in files + dirs:
            p = os.path.join(dirpath, n)
            if stat.S_ISSOCK(os.lstat(p).st_mode):
                found.append(p)
    return found


def test_mirror_flag_and_long_paths(tmp):
    # A root whose socket path cannot be a Unix socket address (> 107 bytes):
    # the daemon refuses clearly and leaves no socket anywhere.
    root = os.path.join(tmp, "r" * 120, "ü 😀 root")
    append(root, "c1", msg("m1", "x"))
    p = subprocess.run([JMIRRORD, "--root", root], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=30)
    err = p.stderr.decode()
    assert p.returncode == 1 and "too long" in err and "--mirror" in err, (p.returncode, err)
    assert sockets_under(tmp) == [], sockets_under(tmp)
    # With the mirror elsewhere (--mirror), the same root works, and the
    # commands given the same --mirror talk to it.
    db = os.path.join(tmp, "m", "mirror.db")
    with Daemon(root, "--mirror", db) as d:
        wait_until(lambda: os.path.exists(db), 10, "the mirror file")
        r = run_cli("--mirror", db, "status", "--json", root=root)
        j = json.loads(r.out)
        assert j["daemon"] is True and j["pid"] == d.pid and j["mirror"] == db, j
        append(root, "c1", msg("m2", "y"))
        a = control_at(db + ".sock", {"cmd": "wait", "id": "c1",
                                      "offset": os.path.getsize(jfile(root, "c1")),
                                      "timeout_ms": 10000})
        assert a["ok"] is True, a
        r = run_cli("--mirror", db, "replay", "--all", root=root)
        assert r.code == 0 and "by jmirrord: 1 conversations, 2 events" in r.out, r
        # JMIRROR_MIRROR is the same thing for the daemon and the tool.
        r = run_cli("status", root=root, env={"JMIRROR_MIRROR": db})
        assert "running (pid %d" % d.pid in r.out, r
    con = sqlite3.connect(db)
    assert con.execute("SELECT id, content FROM messages ORDER BY seq").fetchall() == \
        [("m1", "x"), ("m2", "y")]
    con.close()


def lock_held(root):
    import fcntl
    try:
        fd = os.open(mirror_db(root) + ".lock", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    except BlockingIOError:
        return os.pread(fd, 128, 0).decode()
    finally:
        os.close(fd)


def test_daemon_waits_for_a_tool_holding_the_lock(tmp):
    root = os.path.join(tmp, "root")
    _, messages = make_corpus(root, 100, 500)
    rp = subprocess.Popen([JMIRROR, "--root", root, "replay", "--all"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        holder = wait_until(lambda: rp.poll() is not None or lock_held(root), 30,
                            "the replay to take the lock")
        assert rp.poll() is None, "the replay finished before the daemon could start"
        assert holder.endswith(" jmirror replay\n"), holder
        d = Daemon(root, "-v").spawn()
        d.wait_ready(60)
        # It answers only once it has the lock, so the replay has let go of
        # it (the process may still be on its way out).
        assert rp.wait(60) == 0
        assert b"replayed 100 conversations" in rp.stdout.read()
        assert lock_held(root) == "%d jmirrord\n" % d.pid
        wait_rows(root, messages)
        code, _ = d.stop()
        assert code == 0
    finally:
        if rp.poll() is None:
            rp.kill()
        rp.wait()
    assert_verify_clean(root, 100)


def control_at(path, req):
    with Control(path) as c:
        return c.request(req)


# --------------------------------------------------------------------------
# Signals.

def make_corpus(root, nconv, nev):
    for c in range(nconv):
        lines = []
        for n in range(nev):
            if n % 10 == 9:
                lines.append(json.dumps({"type": "message.edited", "id": "m%d" % (n - 1),
                                         "content": "edited %d" % n, "ts": ts(n)}))
            else:
                lines.append(msg("m%d" % n, "conversation %d message %d %s" % (c, n, "x" * (n % 200)),
                                 ts=ts(n)))
        write_lines(jfile(root, "corpus-%03d" % c), lines, "wb")
    return nconv * nev, nconv * (nev - nev // 10)


def test_sigterm_prompt(tmp):
    root = os.path.join(tmp, "root")
    d = Daemon(root, "-v").start()
    code, took = d.stop()
    assert code == 0, d.log_text()
    assert took < 2, took
    note("SIGTERM, idle: exit 0 after %.0f ms" % (took * 1000))
    # SIGINT too.
    d = Daemon(root).start()
    code, took2 = d.stop(signal.SIGINT)
    assert code == 0 and took2 < 2, (code, took2)
    # While a `replay --all` of a corpus runs through the daemon.
    events, messages = make_corpus(root, 100, 500)
    r = run_cli("ingest", root=root)
    assert r.code == 0, r
    d = Daemon(root, "-v").start()
    wait_status(root, lambda s: s["busy"] is None and s["queued"] == 0, 60, "an idle daemon")
    rp = subprocess.Popen([JMIRROR, "--root", root, "replay", "--all"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    clients = []
    try:
        wait_until(lambda: rp.poll() is not None or
                   control(root, {"cmd": "status"})["busy"] == "request",
                   20, "the replay to start in the daemon")
        assert rp.poll() is None, "the replay finished before it could be interrupted"
        # Company for the shutdown: a pending wait, a request queued behind
        # the replay, an idle connection, half a request.
        for req in ['{"cmd":"wait","id":"corpus-000","offset":1000000000,"timeout_ms":600000}\n',
                    '{"cmd":"verify","repair":true}\n', "", '{"cmd":"sta']:
            c = Control(sock_path(root))
            if req:
                c.send(req)
            clients.append(c)
        assert clients[2].request({"cmd": "status"})["busy"] == "request"
        code, took = d.stop()
    finally:
        d.kill()
        if rp.poll() is None:
            rp.wait(30)
    out, err = rp.communicate()
    assert code == 0, d.log_text()
    assert took < 2, took
    note("SIGTERM during replay --all of %d events: exit 0 after %.0f ms; the replay "
         "client exited %d: %s" % (events, took * 1000, rp.returncode, err.decode().strip()))
    assert rp.returncode == 1 and b"jmirrord" in err, (rp.returncode, out, err)
    # Every other client got an answer or an end of file, not a hang.
    for c in clients:
        a = c.read()
        assert a is None or a["ok"] is False, a
        c.close()
    # The interrupted rebuild left the old mirror whole.
    assert integrity_ok(root)
    assert_verify_clean(root, 100)
    assert message_count(root) == messages
    log = d.log_text()
    assert "SIGTERM" in log and "stopped" in log, log
    # While it catches up on a corpus it has never seen (a fresh mirror).
    for suffix in ["", "-wal", "-shm"]:
        if os.path.exists(mirror_db(root) + suffix):
            os.unlink(mirror_db(root) + suffix)
    d = Daemon(root).start()
    try:
        wait_status(root, lambda s: s["events_ingested"] > 0 and s["busy"] == "ingest", 30,
                    "the catch-up to be under way")
        code, took = d.stop()
    finally:
        d.kill()
    assert code == 0 and took < 2, (code, took, d.log_text())
    partial = message_count(root)
    note("SIGTERM during catch-up: exit 0 after %.0f ms with %d of %d messages in"
         % (took * 1000, partial, messages))
    assert integrity_ok(root)
    with Daemon(root):
        wait_rows(root, messages, timeout=90)
        wait_verify_clean(root, 60)


def test_sighup_reconciles(tmp):
    root = os.path.join(tmp, "root")
    outside = os.path.join(tmp, "outside.jsonl")
    with Daemon(root, "--log-level", "info") as d:
        append(root, "h", msg("m0", "zero"))
        wait_rows(root, 1, conv="h")
        # A second name for the file, outside journal/: inotify reports
        # writes to the directory watch only through the journal/ name.
        os.link(jfile(root, "h"), outside)
        write_lines(outside, [msg("m1", "through the other name", ts=ts(5))])
        # Not a synchronisation: this checks that nothing arrives (the event
        # was invisible to the watch); if this kernel does report it, the
        # SIGHUP check below still runs but proves less.
        t_end = time.monotonic() + 0.5
        invisible = True
        while time.monotonic() < t_end:
            if message_count(root, "h") != 1:
                invisible = False
                break
            time.sleep(0.02)
        note("a write through a hard link outside journal/ %s the watch"
             % ("was invisible to" if invisible else "was SEEN by"))
        d.send_signal(signal.SIGHUP)
        wait_rows(root, 2, conv="h")
        wait_until(lambda: "SIGHUP" in d.log_text() and
                   d.log_text().count("reconciled") >= 2, 10, "the SIGHUP log lines")
        wait_verify_clean(root)
        # The daemon is still alive and well after the signal.
        assert d.status()["ok"]
    log = d.log_text()
    hup = log[log.index("SIGHUP"):]
    assert "reconciled 1 files" in hup, log
    if invisible:
        assert "1 changed" in hup, log


# --------------------------------------------------------------------------
# The control socket against hostile or clumsy clients.

def vm_rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def test_control_garbage_and_long_lines(tmp):
    root = os.path.join(tmp, "root")
    with Daemon(root) as d:
        sp = sock_path(root)
        assert oct(os.stat(sp).st_mode & 0o777) == "0o600"
        with Control(sp) as c:
            for junk in ["garbage", "{", "[1,2]", '"str"', "{}", '{"cmd":42}',
                         '{"cmd":"frobnicate"}', '{"cmd":"status","cmd":"status"}',
                         "\x00\x01\x02", b"\xff\xfe{}", b'{"cmd":"st\xc3atus"}']:
                a = c.request(junk)
                assert a["ok"] is False and a["error"], (junk, a)
            # Still usable: a real request on the same connection.
            a = c.request({"cmd": "status"})
            assert a["ok"] is True and a["pid"] == d.pid, a
            # Two requests in one write: two answers, in order.
            c.send('{"cmd":"status"}\n{"cmd":"bogus"}\r\n\n{"cmd":"reconcile"}\n')
            assert c.read()["ok"] is True
            assert c.read()["ok"] is False
            assert c.read() == {"ok": True}
        # A 1 MB line without a newline: an error, then the daemon hangs up.
        c = Control(sp)
        sender_err = []

        def send_big():
            try:
                c.send(b"{" + b"x" * (1 << 20))
            except OSError as e:  # the daemon closed: expected
                sender_err.append(e)
        t = threading.Thread(target=send_big)
        t.start()
        a = c.read()
        assert a["ok"] is False and "longer than" in a["error"], a
        assert c.read() is None  # closed
        t.join(10)
        assert not t.is_alive()
        c.close()
        # Pipelined: many requests in flight, answers read as they come.
        n = 20000
        with Control(sp) as c:
            t = threading.Thread(target=lambda: c.send('{"cmd":"status"}\n' * n))
            t.start()
            answers = [c.read() for _ in range(n)]
            t.join(30)
            assert all(a["ok"] is True and a["pid"] == d.pid for a in answers)
        # Pipelined requests, then a line that never ends: every answer, then
        # the error, then the end.
        with Control(sp) as c:
            def send_then_big():
                try:
                    c.send('{"cmd":"status"}\n' * 8000 + "[" * (300 << 10))
                except OSError:
                    pass
            t = threading.Thread(target=send_then_big)
            t.start()
            answers = [c.read() for _ in range(8001)]
            assert all(a["ok"] is True for a in answers[:8000]), answers[-2]
            assert answers[8000]["ok"] is False and "longer than" in answers[8000]["error"]
            assert c.read() is None
            t.join(30)
        # A client that sends and never reads: the daemon stops reading it
        # (backpressure) instead of buffering without limit.
        rss0 = vm_rss_kb(d.pid)
        with Control(sp, timeout=2.0) as c:
            sent = 0
            try:
                while sent < (64 << 20):
                    c.send(b'{"cmd":"status"}\n' * 4096)
                    sent += 17 * 4096
            except socket.timeout:
                pass
            rss1 = vm_rss_kb(d.pid)
            note("a client that never reads got %d KB in before it blocked; daemon RSS "
                 "%s -> %s KB" % (sent // 1024, rss0, rss1))
            assert sent < (64 << 20), "the daemon buffered 64 MB of unread requests"
            if rss0 is not None:
                assert rss1 - rss0 < 16 * 1024, (rss0, rss1)
            assert control(root, {"cmd": "status"})["ok"] is True
        # Disconnect in the middle of a request.
        for _ in range(3):
            with Control(sp) as c:
                c.send('{"cmd":"replay","all":true}\n')
            with Control(sp) as c:
                c.send('{"cmd":"verify","repair":true}\n{"cmd":"wait","id":"x","offset":99}\n')
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sp)
        s.sendall(b'{"cmd":"stat')  # half a request
        s.close()
        assert d.alive()
        assert control(root, {"cmd": "status"})["pid"] == d.pid
        # It still does its work.
        append(root, "c", msg("m1", "x"))
        wait_rows(root, 1)
        assert d.alive()


def test_control_hostile_ids_and_wait(tmp):
    root = os.path.join(tmp, "root")
    outside = os.path.join(tmp, "evil")
    with Daemon(root) as d:
        append(root, "c", msg("m1", "x"))
        wait_rows(root, 1)
        bad_ids = ["..", ".", "../evil", "../../evil", "a/b", "/tmp/evil", "Abc", "",
                   "x" * 129, ".hidden", "a\u0000b", "é", "a b", "a\nb"]
        with Control(sock_path(root)) as cl:
            for bid in bad_ids:
                for req in [{"cmd": "replay", "ids": [bid]},
                            {"cmd": "replay", "ids": ["c", bid]},
                            {"cmd": "verify", "ids": [bid]},
                            {"cmd": "verify", "ids": [bid], "repair": True},
                            {"cmd": "ingest", "ids": [bid]},
                            {"cmd": "wait", "id": bid, "offset": 1, "timeout_ms": 100}]:
                    a = cl.request(req)
                    assert a["ok"] is False and a["error"], (req, a)
            for req in [{"cmd": "replay"}, {"cmd": "replay", "ids": []},
                        {"cmd": "replay", "ids": "c"}, {"cmd": "replay", "ids": [1]},
                        {"cmd": "verify", "ids": {"a": 1}}, {"cmd": "ingest", "ids": [None]},
                        {"cmd": "wait", "id": "c"}, {"cmd": "wait", "id": "c", "offset": -1},
                        {"cmd": "wait", "id": "c", "offset": "9"},
                        {"cmd": "wait", "id": "c", "offset": 1, "timeout_ms": "x"},
                        {"cmd": "wait", "id": 5, "offset": 1}]:
                a = cl.request(req)
                assert a["ok"] is False and a["error"], (req, a)
            # wait: an offset in the future times out ...
            size = os.path.getsize(jfile(root, "c"))
            t0 = time.monotonic()
            a = cl.request({"cmd": "wait", "id": "c", "offset": size + 1000, "timeout_ms": 200})
            took = time.monotonic() - t0
            assert a["ok"] is False and a["error"] == "timed out" and a["offset"] == size, a
            assert 0.15 < took < 5, took
            # ... and an offset just written is reached.
            append(root, "c", msg("m2", "y"))
            size2 = os.path.getsize(jfile(root, "c"))
            a = cl.request({"cmd": "wait", "id": "c", "offset": size2, "timeout_ms": 10000})
            assert a == {"ok": True, "offset": size2}, a
            # A wait that is pending when the append comes.
            res = []
            with Control(sock_path(root)) as c2:
                th = threading.Thread(target=lambda: res.append(
                    c2.request({"cmd": "wait", "id": "c", "offset": size2 + 1,
                                "timeout_ms": 20000})))
                th.start()
                append(root, "c", msg("m3", "z"))
                th.join(30)
                assert res and res[0]["ok"] is True and res[0]["offset"] > size2, res
            # A wait for a conversation that does not exist yet.
            a = cl.request({"cmd": "wait", "id": "newconv", "offset": 1, "timeout_ms": 100})
            assert a["ok"] is False and a["error"] == "timed out", a
            # Valid requests on the same connection after all that.
            a = cl.request({"cmd": "verify", "ids": ["c"]})
            assert a["ok"] is True and a["drift"] == 0, a
            a = cl.request({"cmd": "replay", "ids": ["c"]})
            assert a["ok"] is True and a["events"] == 3, a
        assert not os.path.exists(outside) and not os.path.exists(os.path.join(tmp, "evil.jsonl"))
        assert sorted(os.listdir(os.path.join(root, "journal"))) == ["c.jsonl"]
        assert d.alive()
        wait_verify_clean(root)


# --------------------------------------------------------------------------
# The jmirror commands with and without a daemon.

STATUS_DAEMON_KEYS = {"daemon", "pid", "root", "mirror", "uptime_s", "files_tracked",
                      "bytes_behind", "queued", "events_ingested", "bad_lines",
                      "ignored_files", "replays", "last_error", "busy", "journal_present",
                      "mirror_replaced", "backup"}
STATUS_MIRROR_KEYS = {"daemon", "root", "mirror", "files_tracked", "files", "messages",
                      "bytes_behind", "bad_lines", "ignored_files", "journal_present",
                      "schema_version", "backup"}


CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def test_status_backup_exclusion(tmp):
    """status says the mirror is excluded from backups only when mirror/
    holds a CACHEDIR.TAG that starts with the standard signature, with or
    without a daemon; jmirrord and the writing commands write the tag
    when it is missing or does not start with the signature."""
    root = os.path.join(tmp, "root")
    tag = os.path.join(root, "mirror", "CACHEDIR.TAG")
    append(root, "c1", msg("m1", "x"))
    assert run_cli("ingest", root=root).code == 0
    with open(tag, "rb") as f:
        assert f.read().startswith(CACHEDIR_SIGNATURE + b"\n")

    def excluded():
        r = run_cli("status", root=root)
        assert r.code == 0, r
        j = json.loads(run_cli("status", "--json", root=root).out)
        text = "mirror excluded by CACHEDIR.TAG" in r.out
        assert text == j["backup"]["cachedir_tag"], (r, j)
        assert text or "mirror NOT excluded by CACHEDIR.TAG" in r.out, r
        return text
    assert excluded()
    for bad in [b"", b"hello\n", CACHEDIR_SIGNATURE[:-1] + b"0\n"]:
        with open(tag, "wb") as f:
            f.write(bad)
        assert not excluded(), bad
        # the next writer of the mirror writes it whole again
        assert run_cli("ingest", root=root).code == 0
        with open(tag, "rb") as f:
            assert f.read().startswith(CACHEDIR_SIGNATURE + b"\n"), bad
        assert excluded(), bad
        with open(tag, "wb") as f:
            f.write(bad)
    os.unlink(tag)
    assert not excluded()
    with Daemon(root):
        wait_rows(root, 1)
        with open(tag, "rb") as f:
            assert f.read().startswith(CACHEDIR_SIGNATURE + b"\n")
        assert excluded()
        os.unlink(tag)
        assert not excluded()


def test_status_with_and_without_daemon(tmp):
    root = os.path.join(tmp, "root")
    append(root, "c1", msg("m1", "x"))
    write_lines(jfile(root, "c1"), ["not json at all"])
    append(root, "c1", msg("m2", "y"))
    write_lines(os.path.join(root, "journal", "notes.txt"), ["x"])
    # No daemon and no mirror yet.
    r = run_cli("status", root=root)
    assert r.code == 1 and "no daemon running" in r.err, r
    r = run_cli("ingest", root=root)
    assert r.code == 0 and "by jmirrord" not in r.out, r
    r = run_cli("status", root=root)
    assert r.code == 0, r
    assert "not running (status read from the mirror)" in r.out, r
    assert "2 messages" in r.out and "ignored files:   1" in r.out, r
    r = run_cli("status", "--json", root=root)
    j = json.loads(r.out)
    assert STATUS_MIRROR_KEYS <= set(j), STATUS_MIRROR_KEYS - set(j)
    assert j["daemon"] is False and j["messages"] == 2 and j["files"] == 1, j
    assert j["bad_lines"] == 1 and j["ignored_files"] == 1 and j["bytes_behind"] == 0, j
    assert j["backup"]["cachedir_tag"] is True, j
    # A file appended to without a daemon: bytes behind.
    append(root, "c1", msg("m3", "z"))
    j = json.loads(run_cli("status", "--json", root=root).out)
    assert j["bytes_behind"] > 0, j
    with Daemon(root) as d:
        wait_rows(root, 3)
        r = run_cli("status", root=root)
        assert r.code == 0, r
        assert "daemon:          running (pid %d," % d.pid in r.out, r
        assert "not running" not in r.out and "files tracked:   1" in r.out, r
        j = json.loads(run_cli("status", "--json", root=root).out)
        assert STATUS_DAEMON_KEYS <= set(j), STATUS_DAEMON_KEYS - set(j)
        assert j["daemon"] is True and j["pid"] == d.pid and j["root"] == root, j
        assert j["mirror"] == mirror_db(root) and j["journal_present"] is True, j
        assert j["files_tracked"] == 1 and j["bytes_behind"] == 0 and j["ignored_files"] == 1, j
        assert j["events_ingested"] == 1 and j["last_error"] is None, j
    r = run_cli("status", root=root)
    assert "not running (status read from the mirror)" in r.out, r
    # A stale socket file left by a killed daemon is not a daemon.
    d = Daemon(root).start()
    d.kill()
    assert os.path.exists(sock_path(root))
    r = run_cli("status", root=root)
    assert r.code == 0 and "not running" in r.out, r


def test_commands_delegated_to_daemon(tmp):
    root = os.path.join(tmp, "root")
    for c in range(5):
        append(root, "c%d" % c, *[msg("m%d" % i, "x%d" % i) for i in range(10)])
    with Daemon(root) as d:
        wait_rows(root, 50)
        r = run_cli("replay", "--all", root=root)
        assert r.code == 0 and r.out.startswith("replayed by jmirrord: 5 conversations, 50 events"), r
        j = json.loads(run_cli("replay", "--all", "--json", root=root).out)
        assert j["by_daemon"] is True and j["conversations"] == 5 and j["events"] == 50, j
        r = run_cli("replay", "c1", "c2", root=root)
        assert r.code == 0 and "by jmirrord" in r.out and "2 conversations, 20 events" in r.out, r
        # Break the mirror behind the daemon's back; verify --repair via the
        # daemon puts it right.
        con = sqlite3.connect(mirror_db(root), timeout=30)
        con.execute("UPDATE messages SET content = 'tampered' WHERE conversation_id = 'c3'")
        con.commit()
        con.close()
        code, j, r = verify(root)
        assert code == 1 and j["drift"] == 1, r
        r = run_cli("verify", "--repair", root=root)
        assert r.code == 0 and "verified by jmirrord (1 repaired)" in r.out, r
        assert "5 conversations: 5 ok, 0 behind, 0 drift" in r.out, r
        j = json.loads(run_cli("verify", "--repair", "--json", root=root).out)
        assert j["by_daemon"] is True and j["drift"] == 0 and j["repaired"] == 0, j
        r = run_cli("ingest", root=root)
        assert r.code == 0 and r.out.startswith("ingested by jmirrord:"), r
        j = json.loads(run_cli("ingest", "--json", root=root).out)
        assert j["by_daemon"] is True and j["files"] == 5, j
        j = json.loads(run_cli("ingest", "c4", "--json", root=root).out)
        assert j["by_daemon"] is True and j["files"] == 1, j
        assert d.status()["replays"] == 3
        # Refusals still come back as errors through the CLI.
        r = run_cli("replay", "../x", root=root)
        assert r.code == 1, r
    assert_verify_clean(root, 5)
    r = run_cli("replay", "--all", root=root)
    assert r.code == 0 and "by jmirrord" not in r.out, r


# --------------------------------------------------------------------------
# Service files.

def systemd_unquote_words(value):
    """Split an ExecStart= value the way systemd does (quotes, \\, %%)."""
    words, cur, i, inq = [], None, 0, False
    while i < len(value):
        ch = value[i]
        if ch == '"':
            inq = not inq
            cur = cur or ""
        elif ch == "\\" and i + 1 < len(value):
            i += 1
            cur = (cur or "") + value[i]
        elif ch == "%" and value[i + 1:i + 2] == "%":
            i += 1
            cur = (cur or "") + "%"
        elif ch == " " and not inq:
            if cur is not None:
                words.append(cur)
            cur = None
        else:
            cur = (cur or "") + ch
        i += 1
    if cur is not None:
        words.append(cur)
    return words


def test_service_files(tmp):
    root = os.path.join(tmp, "my root & <stuff> 100% \"q\" é")
    os.makedirs(root)
    home = os.path.join(tmp, "home")
    xdg = os.path.join(tmp, "xdg")
    os.makedirs(home)
    env = {"HOME": home, "XDG_CONFIG_HOME": xdg}
    r = run_cli("service", "print", "--launchd", root=root, env=env)
    assert r.code == 0, r
    plist = r.out
    if shutil.which("xmllint"):
        p = subprocess.run(["xmllint", "--noout", "-"], input=plist.encode(),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.returncode == 0, (p.stderr, plist)
    else:
        note("SKIP xmllint: not installed")
    tree = ET.fromstring(plist)
    strings = [e.text for e in tree.iter("string")]
    assert root in strings and "--root" in strings, strings
    assert strings[strings.index("--root") - 1].endswith("jmirrord"), strings
    r = run_cli("service", "print", "--systemd", root=root, env=env)
    assert r.code == 0, r
    unit = r.out
    exec_line = [l for l in unit.splitlines() if l.startswith("ExecStart=")]
    assert len(exec_line) == 1, unit
    words = systemd_unquote_words(exec_line[0][len("ExecStart="):])
    assert words[1:] == ["--root", root], words
    assert os.access(words[0], os.X_OK) and words[0].endswith("jmirrord"), words
    sa = shutil.which("systemd-analyze")
    if sa:
        upath = os.path.join(tmp, "jmirrord.service")
        with open(upath, "w") as f:
            f.write(unit)
        p = subprocess.run([sa, "verify", upath], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=60)
        if p.returncode != 0 and b"bus" in p.stderr.lower() and b"jmirrord" not in p.stderr:
            note("SKIP systemd-analyze verify: %s" % p.stderr.decode().strip())
        else:
            assert p.returncode == 0, (p.stderr, unit)
    else:
        note("SKIP systemd-analyze: not installed")
    # install / uninstall, systemd flavour, into XDG_CONFIG_HOME.
    r = run_cli("service", "install", "--systemd", root=root, env=env)
    assert r.code == 0, r
    target = os.path.join(xdg, "systemd", "user", "jmirrord.service")
    assert os.path.isfile(target), r
    assert open(target).read() == unit
    assert target in r.out
    assert sorted(os.listdir(os.path.dirname(target))) == ["jmirrord.service"]
    r = run_cli("service", "uninstall", "--systemd", root=root, env=env)
    assert r.code == 0 and not os.path.exists(target), r
    r = run_cli("service", "uninstall", "--systemd", root=root, env=env)
    assert r.code == 0, r  # nothing to remove is not an error
    # Without XDG_CONFIG_HOME: ~/.config.
    env2 = {"HOME": home, "XDG_CONFIG_HOME": ""}
    r = run_cli("service", "install", "--systemd", root=root, env=env2)
    target2 = os.path.join(home, ".config", "systemd", "user", "jmirrord.service")
    assert r.code == 0 and os.path.isfile(target2), r
    r = run_cli("service", "uninstall", "--systemd", root=root, env=env2)
    assert r.code == 0 and not os.path.exists(target2), r
    # The launchd flavour installs under HOME.
    r = run_cli("service", "install", "--launchd", root=root, env=env)
    target3 = os.path.join(home, "Library", "LaunchAgents", "io.jmirror.jmirrord.plist")
    assert r.code == 0 and open(target3).read() == plist, r
    r = run_cli("service", "uninstall", "--launchd", root=root, env=env)
    assert r.code == 0 and not os.path.exists(target3), r
    # Usage errors.
    for args in [("service",), ("service", "frob"), ("service", "print", "--launchd", "--systemd")]:
        r = run_cli(*args, root=root, env=env)
        assert r.code == 2, (args, r)


# --------------------------------------------------------------------------
# Idle means idle.

def ctx_switches(pid):
    """Voluntary context switches: (main thread, all threads)."""
    def read(path):
        with open(path) as f:
            for line in f:
                if line.startswith("voluntary_ctxt_switches:"):
                    return int(line.split()[1])
        return 0
    main = read("/proc/%d/status" % pid)
    tasks = sum(read("/proc/%d/task/%s/status" % (pid, t))
                for t in os.listdir("/proc/%d/task" % pid))
    return main, tasks


def test_idle_no_wakeups(tmp):
    if not sys.platform.startswith("linux"):
        note("SKIP: /proc/PID/status is Linux only")
        return
    root = os.path.join(tmp, "root")
    for c in range(20):
        append(root, "c%d" % c, *[msg("m%d" % i, "x") for i in range(20)])
    with Daemon(root) as d:
        wait_rows(root, 400)
        wait_status(root, lambda s: s["busy"] is None and s["queued"] == 0 and
                    s["bytes_behind"] == 0, 20, "the daemon to be idle")
        # Our last status connection's close must have been handled: poll
        # until two samples 50 ms apart agree, then measure 3 s (the quiet
        # window is the measurement, not a synchronisation).
        prev = [ctx_switches(d.pid)]

        def settled():
            time.sleep(0.05)
            cur = ctx_switches(d.pid)
            same = cur == prev[0]
            prev[0] = cur
            return same
        wait_until(settled, 20, "the daemon to settle")
        before = ctx_switches(d.pid)
        time.sleep(3)
        after = ctx_switches(d.pid)
        note("idle 3 s: voluntary context switches main %d -> %d, all threads %d -> %d"
             % (before[0], after[0], before[1], after[1]))
        assert after[0] == before[0], (before, after)
        assert after[1] == before[1], (before, after)
        # And it still wakes for work.
        append(root, "c0", msg("late", "y"))
        wait_rows(root, 21, conv="c0")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--writer":
        writer_main(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        run(globals())
