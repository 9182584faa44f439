"""Crash tests: nothing acknowledged is lost, the mirror always converges to
the journal, no input crashes anything.

  - kill -9 of the writer: `jmirror append ID EVENT --sync MODE` processes
    (several at once, on shared files) and bulk `jmirror append ID -`
    imports, at random points; an event is acknowledged when its append
    exited 0 (bulk: when the summary came);
  - kill -9 of `jmirror backup` at random points, writers running;
  - a journal cut at every byte offset of its last three lines;
  - garbage tails and corruption in the middle of a file;
  - a power loss: writers run under the LD_PRELOAD shim that records what
    was synced (tests/shim/powerloss.c), are killed, then every journal
    file is cut to what the model says survives.

After every round: every acknowledged event is in its file exactly once
and in order, `jmirror ingest` + `jmirror verify` are clean, PRAGMA
integrity_check is ok, no message is in the mirror twice.  (kill -9 of the
daemon, of `replay --all` and of `ingest` are in test_daemon.py and
test_mirror_crash.py.)

CI runs a few dozen rounds per test; JM_NIGHTLY=1 runs hundreds.  Random
kill delays are the only sleeps: real time is the point there.
"""
import collections
import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crashkit import (assert_converges, have_shim, ids_in, integrity,  # noqa: E402
                      journal_path, kill_at, message, mirror_ids, note, parse_journal,
                      power_loss, query, rounds, seed_rng, shim_env, skip, spawn, timed, ts)
from harness import Daemon, run, run_cli, wait_verify_clean  # noqa: E402


# --------------------------------------------------------------------------
# Writers killed at random points.

def cli_time(root, mode="always"):
    """Median wall time of one `jmirror append` here (kill delays scale
    with it: a plain build runs one in ~2 ms, a sanitized one in ~15)."""
    times = []
    for i in range(9):
        _, t = timed(lambda: run_cli("append", "probe", message("p%d" % i, "x"), "--sync",
                                     mode, root=root))
        times.append(t)
    os.unlink(journal_path(root, "probe"))
    return sorted(times)[len(times) // 2]


def text_of(rng):
    k = rng.choice([1, 10, 100, 1000, 3000])
    if rng.random() < 0.05:
        k = 60000  # a write that spans pages: the one a kill could tear
    alphabet = "abcdefghij klmnopqrstuvwxyz ü한😀\"\\\n\t"
    return "".join(rng.choice(alphabet) for _ in range(min(k, 50))) * (k // 50 + 1)


class Ledger:
    """What the writers of a round were told: per conversation, the ids
    acknowledged (in the order each writer issued them) and the ids whose
    append was killed (may or may not be in the file)."""

    def __init__(self):
        self.mu = threading.Lock()
        self.acked = collections.defaultdict(list)      # cid -> [(writer, id)]
        self.killed = collections.defaultdict(set)      # cid -> {id}
        self.content = {}                               # id -> content
        self.failures = []

    def add(self, cid, writer, mid, content, status):
        with self.mu:
            self.content[mid] = content
            if status == "acked":
                self.acked[cid].append((writer, mid))
            elif status == "killed":
                self.killed[cid].add(mid)


def writer_thread(root, ledger, convs, writer, n, mode, t_cli, p_kill, seed, env=None, tag=""):
    rng = random.Random(seed)
    for i in range(n):
        cid = rng.choice(convs)
        mid = "%sw%dn%d" % (tag, writer, i)
        content = text_of(rng)
        p = spawn(["append", cid, message(mid, content, i), "--sync", mode], root=root, env=env)
        delay = rng.uniform(0, t_cli * 1.5) if rng.random() < p_kill else 300
        killed, code, out, err = kill_at(p, delay)
        if killed:
            ledger.add(cid, writer, mid, content, "killed")
        elif code == 0:
            ledger.add(cid, writer, mid, content, "acked")
        else:
            ledger.failures.append((mid, code, err))


def check_files(root, ledger, convs, earlier):
    """Every acknowledged id exactly once, in each writer's order; nothing
    that was never written (in this round or an `earlier` one: id ->
    content); returns (killed ids present, bad lines)."""
    present_killed = bad_lines = 0
    for cid in convs:
        events, bad, tail = parse_journal(journal_path(root, cid))
        bad_lines += len(bad)
        ids = [e["id"] for e in events if e.get("type") == "message"]
        count = collections.Counter(ids)
        twice = [k for k, v in count.items() if v > 1]
        assert not twice, ("appended twice", cid, twice[:5])
        acked = [m for _, m in ledger.acked[cid]]
        missing = [m for m in acked if m not in count]
        assert not missing, ("acknowledged but not in the file", cid, missing[:5])
        unknown = [m for m in ids if m not in ledger.content and m not in earlier]
        assert not unknown, ("never written", cid, unknown[:5])
        pos = {m: i for i, m in enumerate(ids)}
        by_writer = collections.defaultdict(list)
        for w, m in ledger.acked[cid]:
            by_writer[w].append(pos[m])
        for w, p in by_writer.items():
            assert p == sorted(p), ("out of order", cid, w)
        for e in events:
            if e.get("type") == "message":
                want = ledger.content.get(e["id"], earlier.get(e["id"]))
                assert e["content"] == want, ("content changed", e["id"])
        present_killed += sum(1 for m in ledger.killed[cid] if m in count)
        # A kill can tear only a write that spans pages; such a fragment is
        # a bad line (or a pending tail) that holds no acknowledged id.
        for _, _, line in bad:
            for m in acked:
                assert ('"id":"%s"' % m).encode() not in line, ("acked event torn", m)
    return present_killed, bad_lines


def check_mirror(root, convs):
    for cid in convs:
        want = sorted(ids_in(journal_path(root, cid)))
        assert mirror_ids(root, cid) == want, cid


def test_kill_single_appends(tmp):
    """Four writers at once, one `jmirror append` process per event, on
    three shared files; 40% of the processes are killed at a random point
    of their run.  Modes cycle always / batch / none: a process crash loses
    nothing acknowledged in any mode."""
    root = os.path.join(tmp, "root")
    rng = seed_rng("kill single appends")
    t_cli = cli_time(root)
    n_rounds = rounds(30, 500)
    totals = collections.Counter()
    earlier = {}
    t0 = time.monotonic()
    for rnd in range(n_rounds):
        # New files every 25 rounds: a round's checks cost the same at the
        # end of a nightly run as at its start.
        convs = ["c%d" % (rnd // 25 * 3 + i) for i in range(3)]
        mode = ("always", "batch", "none")[rnd % 3]
        ledger = Ledger()
        threads = [threading.Thread(target=writer_thread, args=(
            root, ledger, convs, w, 6, mode, t_cli, 0.4, rng.randrange(1 << 30), None,
            "r%d" % rnd)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not ledger.failures, ledger.failures[:3]
        present, bad = check_files(root, ledger, convs, earlier)
        earlier.update(ledger.content)
        assert_converges(root, what="round %d" % rnd, ids=convs)
        check_mirror(root, convs)
        totals["acked"] += sum(len(v) for v in ledger.acked.values())
        totals["killed"] += sum(len(v) for v in ledger.killed.values())
        totals["killed_present"] += present
        totals["bad"] += bad if rnd % 25 == 24 or rnd == n_rounds - 1 else 0
    assert_converges(root, what="the end")
    note("%d rounds (%.1f s; one append ~%.1f ms): %d appends acknowledged, %d killed "
         "(%d of those after their write: in the file, unacknowledged), %d torn lines"
         % (n_rounds, time.monotonic() - t0, t_cli * 1000, totals["acked"], totals["killed"],
            totals["killed_present"], totals["bad"]))
    assert totals["killed"] >= n_rounds, totals


def bulk_input(rng, tag, n):
    """n events, and a few lines the writer refuses (never written: the
    import goes on, and exits 1 at the end)."""
    events, lines = [], []
    for i in range(n):
        mid = "%s-%d" % (tag, i)
        content = text_of(rng) if rng.random() < 0.2 else "bulk %d ü" % i
        events.append((mid, content))
        lines.append(message(mid, content, i))
        if i % 97 == 50:
            lines.append('{"refused": "not an event"}')
    return events, ("\n".join(lines) + "\n").encode()


def test_kill_bulk_append(tmp):
    """`jmirror append ID -` importing a few thousand events from stdin,
    killed at a random point: the file holds a prefix of the input (never a
    hole, never a line twice); the next append closes any torn tail;
    verify is clean.  An import that finished prints its summary: then all
    of it is there."""
    root = os.path.join(tmp, "root")
    rng = seed_rng("kill bulk append")
    n_rounds = rounds(27, 200)
    inputs = os.path.join(tmp, "input")
    outcomes = collections.Counter()
    for rnd in range(n_rounds):
        mode = ("none", "batch", "always")[rnd % 3]
        n = 300 if mode == "always" else 3000
        cid = "bulk%d" % (rnd // 4)  # a file grows for 4 rounds
        events, data = bulk_input(rng, "r%d" % rnd, n)
        with open(inputs, "wb") as f:
            f.write(data)
        before = ids_in(journal_path(root, cid))
        if rnd < 3:  # measure a complete run of each mode first
            with open(inputs, "rb") as stdin:
                (killed, code, out, err), took = timed(lambda: kill_at(
                    spawn(["append", cid, "-", "--sync", mode], root=root, stdin=stdin), 300))
            assert not killed and code == 1 and b"appended %d events" % n in out, (code, out, err)
            outcomes["measured_" + mode] = took
        else:
            with open(inputs, "rb") as stdin:
                killed, code, out, err = kill_at(
                    spawn(["append", cid, "-", "--sync", mode], root=root, stdin=stdin),
                    rng.uniform(0, outcomes["measured_" + mode] * 1.2))
        ids = ids_in(journal_path(root, cid))
        assert ids[:len(before)] == before, "bytes before the import changed"
        new = ids[len(before):]
        want = [m for m, _ in events]
        assert new == want[:len(new)], ("not a prefix of the input", rnd, new[-3:])
        if not killed:
            # Refused lines make the exit code 1; the summary says all went in.
            assert b"appended %d events" % n in out, (code, out, err)
            assert len(new) == n
        outcomes["killed" if killed else "finished"] += 1
        outcomes["partial"] += killed and 0 < len(new) < n
        # The next append closes a torn tail: the new event is intact.
        _, _, tail = parse_journal(journal_path(root, cid))
        outcomes["torn"] += bool(tail)
        r = run_cli("append", cid, message("after-%d" % rnd, "after"), root=root)
        assert r.code == 0, r
        events_after, bad, tail = parse_journal(journal_path(root, cid))
        assert tail == b"" and events_after[-1]["id"] == "after-%d" % rnd
        assert_converges(root, what="round %d" % rnd, ids=[cid])
        assert mirror_ids(root, cid) == sorted(ids_in(journal_path(root, cid)))
    note("%d bulk imports: %d killed (%d part-way through, %d leaving a torn tail), %d "
         "finished; a full import took %s" % (
             n_rounds, outcomes["killed"], outcomes["partial"], outcomes["torn"],
             outcomes["finished"], ", ".join("%s %.0f ms" % (m, outcomes["measured_" + m] * 1000)
                                             for m in ("none", "batch", "always"))))
    assert outcomes["partial"] >= 1, outcomes


# --------------------------------------------------------------------------
# jmirror backup killed at random points.

def corpus_file(rng, cid, n, start=0):
    out = []
    for i in range(start, start + n):
        k = rng.choice([10, 100, 1000, 3000])
        out.append(message("%s-m%d" % (cid, i), ("%s %d ü한😀 " % (cid, i)) * (k // 12), i))
    return ("\n".join(out) + "\n").encode()


def backup_matches(root, dest, gone=()):
    """Every root file up to its last LF is byte for byte in the backup."""
    with open(os.path.join(dest, "MANIFEST.json")) as f:
        manifest = {e["path"]: e for e in json.load(f)["files"]}
    for name in os.listdir(os.path.join(root, "journal")):
        with open(os.path.join(root, "journal", name), "rb") as f:
            data = f.read()
        data = data[:data.rfind(b"\n") + 1]
        with open(os.path.join(dest, "journal", name), "rb") as f:
            assert f.read() == data, name
        assert manifest["journal/" + name]["bytes"] == len(data), name
    for name in gone:
        assert manifest["journal/" + name].get("gone"), name


def check_after_kill(root, dest, err):
    """`backup --check` after a kill: the previous complete backup, except
    in one narrow window (docs/backups.md): the whole copies of files that
    no longer matched are renamed over the old ones just before the new
    manifest, so a kill right there leaves the old manifest describing
    them as they were.  Such a file must then be the complete new copy
    (and a mirror snapshot a complete database), never a partial one.
    Returns 1 if the kill landed in that window."""
    r = run_cli("backup", "--check", dest, "--json", root=root, timeout=300)
    chk = json.loads(r.out)
    if r.code == 0 and chk["ok"] and chk["files_bad"] == 0:
        return 0
    whole = set(re.findall(r"backup: ([a-z0-9._-]+): copied whole", err.decode()))
    for p in chk["problems"]:
        if p["what"].startswith("note:") or "not in the manifest" in p["what"]:
            continue
        if p["file"] == "mirror/mirror.db":
            assert integrity(None, db=os.path.join(dest, "mirror", "mirror.db")) == [("ok",)]
            continue
        cid = p["file"][len("journal/"):-len(".jsonl")]
        assert cid in whole, ("a killed backup damaged a copy its manifest vouches for", p, r)
        with open(journal_path(root, cid), "rb") as f:
            data = f.read()
        with open(os.path.join(dest, p["file"]), "rb") as f:
            assert f.read() == data[:data.rfind(b"\n") + 1], ("a partial whole copy", p)
    note("a kill landed between the renames and the manifest: %s" % chk["problems"])
    return 1


def test_kill_backup(tmp):
    """`jmirror backup DEST` (half the rounds --with-mirror) killed at a
    random point while writers append: DEST still checks out as the
    previous complete backup (`backup --check` exit 0); the next run
    completes it, holds every event acknowledged before it started, and a
    mirror replayed from it verifies clean."""
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "backup ü")
    rng = seed_rng("kill backup")
    os.makedirs(os.path.join(root, "journal"), mode=0o700)
    for i in range(40):
        cid = "b%02d" % i
        with open(journal_path(root, cid), "wb") as f:
            f.write(corpus_file(rng, cid, rng.choice([10, 40, 150])))
    assert run_cli("ingest", root=root, timeout=300).code == 0
    r, took = timed(lambda: run_cli("backup", dest, "--with-mirror", root=root, timeout=300))
    assert r.code == 0, r
    total = sum(os.path.getsize(journal_path(root, "b%02d" % i)) for i in range(40))
    n_rounds = rounds(24, 150)
    stats = collections.Counter()
    created, gone = [], []

    def change_root(rnd):
        """Growth (the common case), a file replaced by another one (copied
        whole), a new file, a file deleted (kept in the backup)."""
        for cid in rng.sample(["b%02d" % i for i in range(40)], 8):
            if os.path.exists(journal_path(root, cid)):
                with open(journal_path(root, cid), "ab") as f:
                    f.write(corpus_file(rng, cid, rng.randrange(1, 40), 1000 + rnd * 100))
        cid = "b%02d" % rng.randrange(40)
        if rnd % 2 and os.path.exists(journal_path(root, cid)):
            with open(journal_path(root, cid), "wb") as f:
                f.write(corpus_file(rng, cid, 150, 50000 + rnd * 1000))
        if rnd % 3 == 2 and created:  # backed up by an earlier round
            victim = created.pop(0)
            os.unlink(journal_path(root, victim))
            gone.append(victim + ".jsonl")
        if rnd % 3 == 0:
            created.append("new%d" % rnd)
            with open(journal_path(root, created[-1]), "wb") as f:
                f.write(corpus_file(rng, created[-1], 10))

    # How long a round's (incremental) run takes: the kill points are drawn
    # from it.
    change_root(1)
    r, inc = timed(lambda: run_cli("backup", dest, "--with-mirror", root=root, timeout=300))
    assert r.code == 0, r
    for rnd in range(n_rounds):
        change_root(rnd)
        # Writers append (and are acknowledged) while the backup runs.
        ledger = Ledger()
        stop = threading.Event()

        def writing():
            n = 0
            while not stop.is_set():
                mid = "live-r%d-%d" % (rnd, n)
                r = run_cli("append", "live", message(mid, "live %d" % n), "--sync", "always",
                            root=root)
                if r.code == 0:
                    ledger.add("live", 0, mid, "live %d" % n, "acked")
                n += 1
        wt = threading.Thread(target=writing)
        wt.start()
        try:
            args = ["backup", dest] + (["--with-mirror"] if rnd % 2 else [])
            killed, code, out, err = kill_at(spawn(args, root=root), rng.uniform(0, inc))
            stats["killed" if killed else "finished"] += 1
            if not killed:
                assert code == 0, (code, err)
            window = check_after_kill(root, dest, err)
            stats["window"] += window
            r = run_cli("backup", "--check", dest, "--json", root=root, timeout=300)
            stats["left_extra_bytes"] += any("beyond the manifest" in p["what"]
                                             for p in json.loads(r.out)["problems"])
            acked_before = [m for _, m in ledger.acked["live"]]
            r = run_cli("backup", dest, *args[2:], root=root, timeout=300)
            assert r.code == 0, r
        finally:
            stop.set()
            wt.join()
        r = run_cli("backup", "--check", dest, root=root, timeout=300)
        assert r.code == 0 and " 0 bad" in r.out, r
        have = set(ids_in(os.path.join(dest, "journal", "live.jsonl")))
        lost = [m for m in acked_before if m not in have]
        assert not lost, ("acknowledged before the backup started, not in it", lost[:5])
        stats["acked"] += len(ledger.acked["live"])
    # The writers stopped: one more run, then the backup is the root.
    r = run_cli("backup", dest, root=root, timeout=300)
    assert r.code == 0, r
    backup_matches(root, dest, gone)
    # The restore drill: a mirror replayed from the backup verifies clean
    # and has the rows of every conversation the root still has.
    restored = os.path.join(tmp, "restored")
    shutil.copytree(os.path.join(dest, "journal"), os.path.join(restored, "journal"))
    r = run_cli("replay", "--all", root=restored, timeout=300)
    assert r.code == 0, r
    assert_converges(restored, what="restored")
    assert_converges(root, what="root")
    for (cid,) in query(root, "SELECT id FROM conversations"):
        assert mirror_ids(restored, cid) == mirror_ids(root, cid), cid
    note("%.1f MB, a full backup --with-mirror %.0f ms, a round's %.0f ms; %d rounds: %d "
         "killed, %d finished "
         "before the kill, %d kills left bytes beyond the manifest (cut by the next run), "
         "%d landed between the whole copies' renames and the manifest's; "
         "%d appends acknowledged meanwhile, all in the backup"
         % (total / 1e6, took * 1000, inc * 1000, n_rounds, stats["killed"], stats["finished"],
            stats["left_extra_bytes"], stats["window"], stats["acked"]))
    assert stats["killed"] >= n_rounds // 3, stats


def test_backup_killed_in_the_rename_window(tmp):
    """The state a kill leaves between the renames of the whole copies and
    the manifest's, made on purpose (the random kills above land there
    about once in a hundred): the backup's copy of a file is the new,
    longer one, the manifest still the old.  The next run must notice that
    the copy no longer matches its manifest (the root agrees with it, so
    the head and tail checks pass) and vouch for what it holds: `backup
    --check` clean, not a SHA-256 resumed from the old bytes' state."""
    rng = seed_rng("backup rename window")
    root, dest = os.path.join(tmp, "root"), os.path.join(tmp, "dest")
    os.makedirs(os.path.join(root, "journal"), mode=0o700)
    for same_size in (False, True):
        with open(journal_path(root, "w"), "wb") as f:
            f.write(corpus_file(rng, "w", 50))
        assert run_cli("backup", dest, root=root).code == 0
        old = open(journal_path(root, "w"), "rb").read()
        new = corpus_file(rng, "w", 80, 9000)
        new = new[:len(old) - 1] + b"\n" if same_size else new
        with open(journal_path(root, "w"), "wb") as f:
            f.write(new)
        # The rename happened (a copy of the new bytes), the manifest did not.
        tmpcopy = os.path.join(dest, "journal", ".w.jsonl.copy")
        with open(tmpcopy, "wb") as f:
            f.write(new)
        later = os.stat(os.path.join(dest, "MANIFEST.json")).st_mtime_ns + 10 ** 9
        os.utime(tmpcopy, ns=(later, later))  # written after the manifest
        os.replace(tmpcopy, os.path.join(dest, "journal", "w.jsonl"))
        with open(journal_path(root, "w"), "ab") as f:  # and the root grew
            f.write(corpus_file(rng, "w", 3, 20000))
        r = run_cli("backup", dest, root=root)
        assert r.code == 0, r
        r = run_cli("backup", "--check", dest)
        assert r.code == 0 and " 0 bad" in r.out, (same_size, r)
        backup_matches(root, dest)


# --------------------------------------------------------------------------
# A journal cut at every byte offset of its last lines.

def fold_messages(events):
    """What the mirror must hold: {id: (content, status)} (messages,
    deltas and ends only: the lines of these tests)."""
    out = {}
    for e in events:
        t = e.get("type")
        if t == "message":
            out[e["id"]] = [e["content"], "complete"]
        elif t == "message.delta":
            out.setdefault(e["id"], ["", "streaming"])[0] += e.get("text") or ""
        elif t == "message.end" and e["id"] in out:
            out[e["id"]][1] = "complete"
    return {k: tuple(v) for k, v in out.items()}


def mirror_messages(root, cid, db=None):
    return {m: (c, s) for m, c, s in query(
        root, "SELECT id, content, status FROM messages WHERE conversation_id = ?", (cid,), db=db)}


def errors_json(root, cid):
    r = run_cli("errors", cid, "--json", root=root)
    assert r.code == 0, r
    return [json.loads(l) for l in r.out.splitlines() if l.strip()]


def truncation_case(tmp, data, cut, base_lines):
    root = os.path.join(tmp, "cut%05d" % cut)
    os.makedirs(os.path.join(root, "journal"), mode=0o700)
    with open(journal_path(root, "t"), "wb") as f:
        f.write(data[:cut])
    lf = data.rfind(b"\n", 0, cut) + 1
    complete, _, _ = parse_journal(journal_path(root, "t"))
    r = run_cli("ingest", root=root)
    assert r.code == 0, r
    # Exactly the complete lines; the pending tail is nobody's business yet.
    assert mirror_messages(root, "t") == fold_messages(complete), cut
    assert query(root, "SELECT byte_offset FROM sources") == [(lf,)], cut
    assert query(root, "SELECT count(*) FROM bad_lines") == [(0,)], cut
    # The next append closes the fragment as a line of its own.
    r = run_cli("append", "t", message("next", "the event after the cut", 99), root=root)
    assert r.code == 0, r
    with open(journal_path(root, "t"), "rb") as f:
        after = f.read()
    frag = data[lf:cut]
    assert after.startswith(data[:cut] + (b"\n" if frag else b"")), cut
    events, bad, tail = parse_journal(journal_path(root, "t"))
    assert tail == b"" and events[-1]["id"] == "next", cut
    r = run_cli("ingest", root=root)
    assert r.code == 0, r
    assert mirror_messages(root, "t") == fold_messages(events), cut
    errs = errors_json(root, "t")
    nlines = data[:lf].count(b"\n")
    frag_valid = False
    if frag.strip(b" \t\r"):
        try:
            frag_valid = isinstance(json.loads(frag.decode("utf-8").rstrip("\r")), dict)
        except ValueError:
            pass
    if frag.strip(b" \t\r") and not frag_valid:
        assert [(e["line"], e["offset"]) for e in errs] == [(nlines + 1, lf)], (cut, errs)
    else:
        assert errs == [], (cut, errs)
    r = run_cli("verify", root=root)
    assert r.code == 0 and "1 ok" in r.out, (cut, r)
    shutil.rmtree(root)
    return bool(frag), frag_valid


def test_truncated_at_every_offset(tmp):
    """A journal whose last three lines (a message, a delta, an end; UTF-8
    of 2, 3 and 4 bytes) are cut at every byte offset, each into a fresh
    mirror: exactly the complete lines are mirrored, the bytes after the
    last LF are left alone; then `jmirror append` turns the fragment into
    one bad line (or a valid one, when only the LF was missing) and adds
    the new event intact; verify is clean."""
    lines = [json.dumps({"type": "conversation.created", "ts": ts(0), "title": "cut"})]
    for i in range(8):
        lines.append(message("u%d" % i, "line %d" % i, i + 1))
    lines.append(json.dumps({"type": "message.delta", "ts": ts(20), "id": "a1",
                             "text": "start "}))
    lines += [message("u9", "짧은 ü", 21),
              json.dumps({"type": "message.delta", "ts": ts(22), "id": "a1", "text": "😀 ok"},
                         ensure_ascii=False),
              json.dumps({"type": "message.end", "ts": ts(23), "id": "a1"})]
    data = ("\n".join(lines) + "\n").encode()
    start = len(("\n".join(lines[:-3]) + "\n").encode())
    cuts = list(range(start, len(data) + 1))
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=3) as ex:
        results = list(ex.map(lambda c: truncation_case(tmp, data, c, len(lines)), cuts))
    with_frag = sum(1 for f, _ in results if f)
    valid_frag = sum(1 for _, v in results if v)
    note("%d cuts (bytes %d..%d) in %.1f s: %d left a fragment (%d of them a complete event "
         "without its LF), %d ended on a line boundary"
         % (len(cuts), start, len(data), time.monotonic() - t0, with_frag, valid_frag,
            len(cuts) - with_frag))
    assert valid_frag == 3 and len(cuts) - with_frag == 4


# --------------------------------------------------------------------------
# Garbage tails and corruption in the middle.

def base_lines(n):
    return [message("m%d" % i, "plain ascii text number %d, nothing else" % i, i)
            for i in range(n)]


def test_garbage_tails(tmp):
    """Zeros, 0xFF, random bytes, half a line after the last line: left
    alone while they have no LF (all rows there, no error); the next append
    makes each one bad line at the right line and byte offset, then the new
    event; with LFs inside, every piece is its own bad line."""
    rng = seed_rng("garbage tails")
    base = ("\n".join(base_lines(10)) + "\n").encode()
    half = message("half", "half of a line that never ended")[:30].encode()
    rand = bytes(rng.choice([b for b in range(256) if b != 10]) for _ in range(300))
    tails = {"zeros": b"\0" * 64, "ff": b"\xff" * 40, "random": rand, "half": half,
             "zeros-lf": b"\0" * 10 + b"\n", "random-lfs": bytes(
                 rng.randrange(256) for _ in range(400)) + b"\n",
             "cr-lf": b"\r\n"}
    for name, tail in tails.items():
        root = os.path.join(tmp, name)
        os.makedirs(os.path.join(root, "journal"), mode=0o700)
        with open(journal_path(root, "g"), "wb") as f:
            f.write(base + tail)
        r = run_cli("ingest", root=root)
        assert r.code == 0, (name, r)
        # What the LFs of the tail make lines of, by the format's rules.
        pieces = tail.split(b"\n")
        complete, pending = pieces[:-1], pieces[-1]
        expect, off = [], len(base)
        for i, p in enumerate(complete):
            if p.strip(b" \t\r"):
                expect.append((11 + i, off))
            off += len(p) + 1
        got = [(e["line"], e["offset"]) for e in errors_json(root, "g")]
        assert got == expect, (name, got, expect)
        assert sorted(mirror_ids(root, "g")) == ["m%d" % i for i in range(10)], name
        r = run_cli("append", "g", message("after", "after the garbage"), root=root)
        assert r.code == 0, (name, r)
        assert run_cli("ingest", root=root).code == 0
        if pending:
            expect.append((11 + len(complete), len(base) + len(tail) - len(pending)))
        got = [(e["line"], e["offset"]) for e in errors_json(root, "g")]
        assert got == expect, (name, got, expect)
        assert sorted(mirror_ids(root, "g")) == sorted(["after"] + ["m%d" % i for i in range(10)])
        r = run_cli("verify", root=root)
        assert r.code == 0 and "1 ok" in r.out, (name, r)


def corrupt(line, kind, rng):
    """(new bytes for the line, reason)."""
    if kind == "flip":  # bit 7 of an ASCII byte: never UTF-8 any more
        i = rng.randrange(len(line))
        return line[:i] + bytes([line[i] | 0x80]) + line[i + 1:], "invalid_utf8"
    if kind == "nul":
        i = rng.randrange(len(line))
        return line[:i] + b"\0" + line[i + 1:], "invalid_json"
    if kind == "bang-front":
        return b"!!!" + line, "invalid_json"
    if kind == "bang-middle":  # after the first comma: between members
        i = line.index(b",") + 1
        return line[:i] + b"!!!" + line[i:], "invalid_json"
    if kind == "bang-end":
        return line + b"!!!", "invalid_json"
    raise ValueError(kind)


def test_corruption_in_the_middle(tmp):
    """Each line of a 15-line file in turn damaged (a flipped bit, a NUL,
    `!!!` before, inside, after the object), and a `!!!` line inserted:
    `jmirror errors` names that line and its byte offset with the right
    reason; every other line's message is in the mirror; verify is clean."""
    rng = seed_rng("corruption in the middle")
    lines = [l.encode() for l in base_lines(15)]
    kinds = ["flip", "nul", "bang-front", "bang-middle", "bang-end", "insert"]
    n = 0
    for k in range(len(lines)):
        for kind in kinds:
            root = os.path.join(tmp, "c%d-%s" % (k, kind))
            os.makedirs(os.path.join(root, "journal"), mode=0o700)
            if kind == "insert":
                new = lines[:k] + [b"!!!"] + lines[k:]
                want_ids = ["m%d" % i for i in range(15)]
                reason = "invalid_json"
            else:
                bad, reason = corrupt(lines[k], kind, rng)
                new = lines[:k] + [bad] + lines[k + 1:]
                want_ids = ["m%d" % i for i in range(15) if i != k]
            with open(journal_path(root, "x"), "wb") as f:
                f.write(b"\n".join(new) + b"\n")
            offset = sum(len(l) + 1 for l in new[:k])
            r = run_cli("ingest", root=root)
            assert r.code == 0, r
            errs = errors_json(root, "x")
            assert [(e["line"], e["offset"], e["reason"]) for e in errs] == \
                [(k + 1, offset, reason)], (k, kind, errs)
            assert sorted(mirror_ids(root, "x")) == sorted(want_ids), (k, kind)
            # Lines keep their physical numbers: seq of a later line.
            if k < 14:
                seq = query(root, "SELECT seq FROM messages WHERE id = 'm14'")
                assert seq == [(16 if kind == "insert" else 15,)], (k, kind, seq)
            r = run_cli("verify", root=root)
            assert r.code == 0 and "1 ok" in r.out, (k, kind, r)
            shutil.rmtree(root)
            n += 1
    note("%d damaged files: each bad line reported at its line and offset, nothing else lost"
         % n)


# --------------------------------------------------------------------------
# Power loss.

def test_power_loss_after_a_creator_died(tmp):
    """The writer that creates a file (or journal/) syncs its directory
    before it writes anything; if it dies in between, the entry exists but
    may not survive a power loss.  The next writer must not acknowledge an
    event in it without making that entry durable.  Made on purpose: the
    empty file (and the empty journal/) are created by hand, never synced,
    then `jmirror append --sync always` under the shim, then the power
    loss: the acknowledged event is there."""
    if not have_shim():
        return skip("the LD_PRELOAD shim is Linux only (JM_SHIM unset)")
    rng = seed_rng("power loss after a creator died")
    for what in ("file", "journal dir"):
        root, state = os.path.join(tmp, what, "root"), os.path.join(tmp, what, "state")
        os.makedirs(state)
        env = shim_env(shim_dir=root, state=state)
        if what == "file":  # journal/ is durable, the file's entry is not
            assert run_cli("append", "other", message("o", "x"), "--sync", "always",
                           root=root, env=env).code == 0
            open(journal_path(root, "c1"), "wb").close()
        else:
            os.makedirs(os.path.join(root, "journal"), mode=0o700)
        r = run_cli("append", "c1", message("acked", "must survive"), "--sync", "always",
                    root=root, env=env)
        assert r.code == 0, r
        cuts = power_loss(root, state, rng)
        assert ids_in(journal_path(root, "c1")) == ["acked"], (what, cuts)


def test_power_loss(tmp):
    """Writers under the shim, killed at random, then a power loss: every
    journal file cut to its synced size, plus (at random) nothing, a prefix
    of the unsynced bytes, or zeros in their place.

    What must hold, by durability mode (docs/journal.md):
      always  every acknowledged event survives;
      batch   through the CLI, too: `jmirror append` syncs before it exits
              0 (jm_journal_close), so an acknowledged event survives; a
              bulk import killed part-way keeps a prefix of what it wrote
              (whatever the syncer had synced), never a hole;
      none    nothing is promised: acknowledged events may be lost (the
              test counts them: proof that the power loss bites).
    In every case what survives is a valid journal that ingests into a
    mirror that verifies clean, whether the mirror was ahead of the
    journal (it had ingested bytes the power loss took) or fresh.

    Every third round jmirrord runs through it, tailing the files while
    the writers append (so its mirror holds lines that were never synced),
    and dies with the power (SIGKILL, before the files are cut); restarted
    on what survived, it must see the files shrunk under its offsets,
    replay them, and verify clean by itself.  The mirror keeps everything
    it committed: the worst case for it, ahead of the journal.  (SQLite's
    own pages are not cut: the model covers append-only files only.)"""
    if not have_shim():
        return skip("the LD_PRELOAD shim is Linux only (JM_SHIM unset)")
    rng = seed_rng("power loss")
    root, state = os.path.join(tmp, "root"), os.path.join(tmp, "state")
    os.makedirs(root)
    os.makedirs(state)
    env = shim_env(shim_dir=root, state=state)
    t_cli = cli_time(os.path.join(tmp, "probe"))
    _, data = bulk_input(rng, "probe", 2000)
    _, t_bulk = timed(lambda: run_cli("append", "probe", "-", root=os.path.join(tmp, "probe"),
                                      env=env, stdin=data))
    n_rounds = rounds(24, 300)
    totals = collections.Counter()
    for rnd in range(n_rounds):
        daemon = Daemon(root).start() if rnd % 3 == 2 else None
        ledgers = {}
        threads = []
        g = rnd // 20  # new files every 20 rounds: rounds cost the same all along
        group = ["a%d" % (2 * g), "a%d" % (2 * g + 1), "b%d" % g, "n%d" % g, "bulk%d" % g]
        for mode, convs in (("always", group[:2]), ("batch", [group[2]]),
                            ("none", [group[3]])):
            ledgers[mode] = Ledger()
            for w in range(2 if mode == "always" else 1):
                threads.append(threading.Thread(target=writer_thread, args=(
                    root, ledgers[mode], convs, w, 5, mode, t_cli * 2, 0.3,
                    rng.randrange(1 << 30), env, "r%d%s" % (rnd, mode[0]))))
        # A bulk import in batch mode, killed part-way (at a random point
        # of the time a whole import takes).
        events, data = bulk_input(rng, "r%dbulk" % rnd, 2000)
        bulk_before = ids_in(journal_path(root, group[4]))
        bulk = spawn(["append", group[4], "-", "--sync", "batch"], root=root, env=env,
                     stdin=subprocess.PIPE)
        bulk_delay = rng.uniform(0, t_bulk * 1.2)
        threads.append(threading.Thread(target=lambda: kill_at(bulk, bulk_delay, data)))
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for led in ledgers.values():
            assert not led.failures, led.failures[:3]
        if daemon is not None:  # it goes down with the power, mid-tail
            ahead = query(root, "SELECT count(*) FROM messages")[0][0]
            daemon.kill()
            daemon.check_log()
        elif rnd % 2:  # the mirror ingests first: it will be ahead of the journal
            assert run_cli("ingest", root=root).code == 0
        cuts = power_loss(root, state, rng)
        totals["bytes_lost"] += sum(b - (a or 0) for b, a, _ in cuts.values())
        for mode, led in ledgers.items():
            for cid, acked in led.acked.items():
                have = set(ids_in(journal_path(root, cid)))
                lost = [m for _, m in acked if m not in have]
                totals["acked_" + mode] += len(acked)
                if mode == "none":
                    totals["lost_none"] += len(lost)
                else:
                    assert not lost, ("%s: acknowledged, lost in the power loss" % mode,
                                      cid, lost[:5], cuts.get(cid + ".jsonl"))
        ids = ids_in(journal_path(root, group[4]))
        assert ids[:len(bulk_before)] == bulk_before, "synced before the round, lost"
        want = [m for m, _ in events]
        new = ids[len(bulk_before):]
        assert new == want[:len(new)], "the bulk import left a hole"
        totals["bulk_kept"] += len(new)
        group = [c for c in group if os.path.exists(journal_path(root, c))]
        if daemon is not None:  # back on what survived: it heals by itself
            lost_rows = sum(b > (a or 0) for b, a, _ in cuts.values())
            with Daemon(root) as d:
                wait_verify_clean(root, 60)
                totals["daemon_rounds"] += 1
                totals["daemon_files_cut"] += lost_rows
                totals["daemon_rows_before"] += ahead
        # Every survivor ingests and verifies; appending closes torn tails
        # (and, with the CLI's final sync, makes the files durable: older
        # groups' files are never cut again).
        assert_converges(root, what="round %d, after the power loss" % rnd, ids=group)
        for cid in group:
            r = run_cli("append", cid, message("pl%d-%s" % (rnd, cid), "after"), root=root,
                        env=env)
            assert r.code == 0, r
        assert_converges(root, what="round %d, appended after" % rnd, ids=group)
        for cid in group:
            assert mirror_ids(root, cid) == sorted(ids_in(journal_path(root, cid)))
    assert_converges(root, what="the end")
    # A mirror rebuilt from the survivors, from nothing, is the same.
    r = run_cli("--mirror", os.path.join(tmp, "fresh.db"), "replay", "--all", root=root)
    assert r.code == 0, r
    for (cid,) in query(root, "SELECT id FROM conversations"):
        assert mirror_messages(root, cid) == mirror_messages(
            root, cid, db=os.path.join(tmp, "fresh.db")), cid
    note("%d power losses: %d events acknowledged under always and %d under batch, all "
         "survived; %d of %d acknowledged under none were lost; the killed bulk imports "
         "kept %d events; %.1f KB of unsynced bytes dropped; %d rounds with jmirrord "
         "killed by the power loss, %d files cut under it, all healed"
         % (n_rounds, totals["acked_always"], totals["acked_batch"], totals["lost_none"],
            totals["acked_none"], totals["bulk_kept"], totals["bytes_lost"] / 1e3,
            totals["daemon_rounds"], totals["daemon_files_cut"]))
    assert totals["lost_none"] > 0, "the power loss never took an unsynced event"
    assert totals["daemon_files_cut"] > 0, "no file was ever cut under a running jmirrord"


if __name__ == "__main__":
    run(globals())
