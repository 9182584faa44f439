"""Crash tests of jmirrord while it rebuilds: the daemon (or the `jmirror`
client whose work it does) is SIGKILLed at a random point of a `jmirror
replay --all` or `jmirror verify --repair` asked over its control socket;
and the daemon during `jmirror replay ID...` and during the rebuild it
starts by itself when its mirror was deleted under it.

The root is the corpus of test_mirror_crash.py (300 conversations, over
20 MB).  Before every round some conversations' rows are damaged behind the
daemon's back (contents changed, messages deleted) so that the old mirror
and the repaired one differ.  After every daemon kill, jmirrord is
restarted and waited for, then:
  - PRAGMA integrity_check is ok, no (conversation_id, seq) and no
    (conversation_id, id) is in the mirror twice;
  - replay --all: the mirror is exactly the damaged one or exactly the
    clean result (built aside, copied in in one step);
  - verify --repair: every conversation is exactly as damaged or exactly
    repaired (each is replayed in one transaction), and only damaged ones
    may still drift;
then the interrupted command is run again through the new daemon (the
damage was made by hand: no daemon looks for it on its own), and `jmirror
verify` is clean, integrity ok, no duplicate, the rows equal a fresh
`replay --all` of a copy of the root without a daemon, and every journal
file is byte for byte what it was.

Kill points are random delays (seeded: JM_SEED) across the measured
duration of an uninterrupted run; real time is the point, they are not
synchronisation.  Whether a kill landed mid-work is read from what it left:
the scratch database `<mirror>.rebuild` still there (a rebuild killed
between creating and removing it), a repair half done.
"""
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crashkit import NIGHTLY, note, rounds, seed_rng, spawn  # noqa: E402
from harness import Daemon, control, mirror_db, run, run_cli, wait_until  # noqa: E402
from test_mirror_crash import build_corpus, dump, integrity, write_all  # noqa: E402

# Under ASan every round is several times slower: fewer there.
SANITIZED = os.environ.get("JM_SANITIZED", "none") not in ("", "none")
N_DAEMON_KILLS = rounds(4 if SANITIZED else 12, 60)
N_CLIENT_KILLS = rounds(2 if SANITIZED else 6, 30)

COMMANDS = {"replay": ["replay", "--all"], "repair": ["verify", "--repair"]}


def rebuild_file(root):
    return mirror_db(root) + ".rebuild"


def journal_digests(root):
    jdir = os.path.join(root, "journal")
    out = {}
    for name in sorted(os.listdir(jdir)):
        with open(os.path.join(jdir, name), "rb") as f:
            out[name] = hashlib.sha256(f.read()).hexdigest()
    return out


def per_conversation(d):
    """A dump (test_mirror_crash.dump) split by conversation."""
    convs, msgs, bad, src = d
    out = {c[0]: [c, [], [], None] for c in convs}
    for m in msgs:
        out[m[0]][1].append(m)
    for b in bad:
        out[b[0]][2].append(b)
    for s in src:
        out[s[0]][3] = s
    return out


def damage(root, rng, cids, n):
    """Change contents and delete messages of n conversations, with Python's
    sqlite3 while the daemon runs (the mirror is a WAL database; any
    process may write it).  Returns the damaged ids, and the rowids whose
    content was changed (at least one per damaged conversation)."""
    hit = sorted(rng.sample(cids, n))
    tampered = []
    con = sqlite3.connect(mirror_db(root), timeout=30)
    try:
        for cid in hit:
            rows = [r[0] for r in con.execute(
                "SELECT rowid FROM messages WHERE conversation_id = ? ORDER BY seq", (cid,))]
            picked = rng.sample(rows, min(len(rows), rng.randint(1, 4)))
            for i, rowid in enumerate(picked):
                if i % 2:
                    con.execute("DELETE FROM messages WHERE rowid = ?", (rowid,))
                else:
                    con.execute("UPDATE messages SET content = 'tampered ' || rowid "
                                "WHERE rowid = ?", (rowid,))
                    tampered.append(rowid)
        con.commit()
    finally:
        con.close()
    return hit, tampered


def still_tampered(root, rowids):
    """How many of the changed rows still hold the changed content (a
    replayed conversation's rows are rewritten or gone)."""
    c = sqlite3.connect("file:%s?mode=ro" % mirror_db(root), uri=True, timeout=30)
    try:
        return c.execute("SELECT count(*) FROM messages WHERE rowid IN (%s) AND content "
                         "GLOB 'tampered *'" % ",".join(str(r) for r in rowids)).fetchone()[0]
    finally:
        c.close()


def poll(pred, p, timeout=60):
    """Poll pred() until it holds (True) or the client p exits (False): the
    anchor of a kill point, not a wait for the result."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        if p.poll() is not None:
            return False
        time.sleep(0.002)
    raise AssertionError("timed out after %d s waiting for the work to start" % timeout)


def reap(p, timeout):
    """Its output once it exits; a client still running after `timeout`
    seconds hangs (killed, then the test fails)."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise AssertionError("jmirror %s still running %d s after its daemon died: %r"
                             % (p.args[3:], timeout, err))
    return out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def kill_daemon_at(d, p, delay, started=None):
    """SIGKILL the daemon d `delay` seconds into its client p's run (from
    when started() holds, if given), or when p exits: the random kill
    point.  Then no sanitizer report in its log."""
    if started is not None:
        poll(started, p)
    try:
        p.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        pass
    d.kill()
    d.check_log()


def report_mid_work(outcomes, kinds, t_start, at_least, both):
    """Note how many kills landed mid-work (state one of `kinds`); at least
    `at_least`, and one of each kind if `both`."""
    mid = [o for o in outcomes if o[2] in kinds]
    note("kills (kind, delay (+: from the start of the work), state found, conversations "
         "still damaged): %s" % outcomes)
    note("%d of %d kills landed mid-work (%s); whole test %.1f s"
         % (len(mid), len(outcomes), ", ".join("%d %s" % (sum(o[2] == k for o in mid), k)
                                               for k in kinds), time.monotonic() - t_start))
    assert len(mid) >= at_least, outcomes
    if both:
        assert {o[2] for o in mid} == set(kinds), outcomes


def status(root):
    return control(root, {"cmd": "status"}, timeout=30)


def wait_caught_up(root, nfiles, timeout=120):
    """Every file tracked, nothing behind or queued, no job but the search
    index (which a rebuilt mirror grows while idle)."""
    def idle():
        s = status(root)
        return s if (s["files_tracked"] == nfiles and s["bytes_behind"] == 0 and
                     s["queued"] == 0 and s["busy"] in (None, "search index")) else None
    return wait_until(idle, timeout, "jmirrord to catch up", interval=0.02)


def no_duplicates(db):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        by_seq = c.execute("SELECT conversation_id, seq, count(*) FROM messages "
                           "GROUP BY 1, 2 HAVING count(*) > 1").fetchall()
        by_id = c.execute("SELECT conversation_id, id, count(*) FROM messages "
                          "GROUP BY 1, 2 HAVING count(*) > 1").fetchall()
    finally:
        c.close()
    assert by_seq == [] and by_id == [], (by_seq[:5], by_id[:5])


class Corpus:
    """The root, its reference rows and its journal digests; a daemon on it,
    caught up."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.root = os.path.join(tmp, "root")
        files = build_corpus(self.root)
        write_all(self.root, files)
        self.cids = sorted(files)
        self.size = sum(len(d) for d in files.values())
        self.digests = journal_digests(self.root)
        # The reference: a fresh replay --all of a copy of the root, no daemon.
        ref = os.path.join(tmp, "ref")
        shutil.copytree(os.path.join(self.root, "journal"), os.path.join(ref, "journal"))
        r = run_cli("replay", "--all", root=ref, timeout=300)
        assert r.code == 0 and "by jmirrord" not in r.out, r
        self.clean = dump(mirror_db(ref))
        self.clean_by = per_conversation(self.clean)
        self.log = os.path.join(tmp, "jmirrord.log")
        self.d = None

    def start(self):
        self.d = Daemon(self.root, log=self.log).start()
        wait_caught_up(self.root, len(self.cids))
        return self.d

    def started(self, cmd, tampered):
        """The predicate of the work under way: the scratch database exists
        (replay --all), the first damaged conversation is repaired (verify
        --repair: after its first verify pass)."""
        if cmd == "replay":
            return lambda: os.path.exists(rebuild_file(self.root))
        n = len(tampered)
        return lambda: still_tampered(self.root, tampered) < n

    def timed(self, cmd, rng):
        """Uninterrupted runs of the command through the daemon after
        damaging 100 conversations, the shorter of two (the first can pay
        for a cold cache): (seconds from the client's start to its answer,
        seconds of the work that writes: from the scratch database to the
        answer, from the first conversation repaired to the last)."""
        took = []
        for _ in range(2):
            _, tampered = damage(self.root, rng, self.cids, 100)
            t0 = time.monotonic()
            p = spawn(COMMANDS[cmd], root=self.root)
            assert poll(self.started(cmd, tampered), p), "finished before it started"
            t1 = time.monotonic()
            if cmd == "repair":
                poll(lambda: still_tampered(self.root, tampered) == 0, p)
            t2 = time.monotonic()
            out, err = reap(p, 300)
            t3 = time.monotonic()
            assert p.returncode == 0 and "by jmirrord" in out, (out, err)
            took.append((t3 - t0, (t2 if cmd == "repair" else t3) - t1))
            wait_caught_up(self.root, len(self.cids))
        return min(took)

    def assert_states(self, what, old_by, damaged, whole):
        """Integrity, no duplicate; every conversation exactly as damaged or
        exactly clean (`whole`: all of them the one or the other).  Returns
        the conversations still as damaged."""
        got = self.check_rows(what, old_by)
        assert sorted(got) == self.cids, what
        still = [c for c in damaged if got[c] != self.clean_by[c]]
        if whole:
            assert still in ([], damaged), ("%s: a mixed mirror after replay --all" % what,
                                            len(still), len(damaged))
        return still

    def check_rows(self, what, old_by):
        """Integrity, no duplicate, journals untouched, every conversation
        present exactly as before or exactly clean.  The rows by
        conversation."""
        db = mirror_db(self.root)
        assert integrity(db) == [("ok",)], what
        no_duplicates(db)
        got = per_conversation(dump(db))
        mixed = [x for x in got if got[x] != old_by.get(x) and got[x] != self.clean_by[x]]
        assert not mixed, ("%s: conversations neither as before nor clean" % what, mixed[:5])
        assert self.digests == journal_digests(self.root), what
        return got

    def rerun(self, cmd, what):
        """Run `cmd` again through the running daemon, then converge."""
        r = run_cli(*COMMANDS[cmd], root=self.root, timeout=300)
        assert r.code == 0 and "by jmirrord" in r.out, (what, r)
        wait_caught_up(self.root, len(self.cids))
        self.assert_converged(what)

    def assert_converged(self, what):
        """verify clean, integrity ok, no duplicate, rows equal the clean
        replay, journals untouched."""
        r = run_cli("verify", root=self.root, timeout=300)
        assert r.code == 0 and "0 behind, 0 drift" in r.out, (what, r)
        db = mirror_db(self.root)
        assert integrity(db) == [("ok",)], what
        no_duplicates(db)
        assert dump(db) == self.clean, "%s: rows differ from a clean replay" % what
        assert self.digests == journal_digests(self.root), "%s: a journal file changed" % what
        assert not os.path.exists(rebuild_file(self.root)), what


def test_kill9_daemon_mid_rebuild(tmp):
    t_start = time.monotonic()
    rng = seed_rng("test_kill9_daemon_mid_rebuild")
    c = Corpus(tmp)
    root = c.root
    c.start()
    took = {cmd: c.timed(cmd, rng) for cmd in COMMANDS}
    c.assert_converged("uninterrupted runs")
    c.d.stop()
    note("corpus %.1f MB in %d files; through the daemon: replay --all %.2f s (%.2f s from "
         "its scratch database on), verify --repair of 100 damaged conversations %.2f s "
         "(%.2f s from the first repair to the last); %d rounds%s"
         % (c.size / 1e6, len(c.cids), took["replay"][0], took["replay"][1],
            took["repair"][0], took["repair"][1], N_DAEMON_KILLS,
            " [sanitized]" if SANITIZED else ""))
    outcomes = []
    for k in range(N_DAEMON_KILLS):
        cmd = ("replay", "repair")[k % 2]
        d = c.start()
        assert not os.path.exists(rebuild_file(root)), k
        damaged, tampered = damage(root, rng, c.cids,
                                   rng.randint(80, 120) if cmd == "repair" else 30)
        old_by = per_conversation(dump(mirror_db(root)))
        # Half the kill points anywhere from the client's start; half
        # within the work that writes, from the moment it is seen to start
        # (the load of the machine moves that moment more than it moves
        # the length of the work).
        anywhere = k % 4 >= 2
        t = took[cmd][0 if anywhere else 1]
        delay = rng.uniform(0.02 if anywhere else 0, t * 1.1)
        p = spawn(COMMANDS[cmd], root=root)
        kill_daemon_at(d, p, delay, None if anywhere else c.started(cmd, tampered))
        left = os.path.exists(rebuild_file(root))
        out, err = reap(p, 60)
        what = "round %d (%s, daemon killed %.2f s after %s)" % (
            k, cmd, delay, "the client's start" if anywhere else "the work started")
        # by jmirrord, or (the daemon dead before the client looked for
        # it) by the client itself, holding the lock
        local = p.returncode == 0 and "by jmirrord" not in out
        if p.returncode != 0:
            # Its daemon died under it: one line saying so, no hang.
            assert p.returncode == 1 and "jmirrord" in err, (what, p.returncode, out, err)
        d = c.start()
        st = status(root)
        assert st["last_error"] is None, (what, st)
        still = c.assert_states(what, old_by, damaged, whole=cmd == "replay")
        if p.returncode == 0:
            assert still == [], (what, "answered, yet not done", len(still))
        if cmd == "replay":
            state = ("by the client" if local else "answered" if p.returncode == 0
                     else "mid-rebuild" if left
                     else "before" if still else "after")
        else:
            state = ("by the client" if local else "answered" if p.returncode == 0
                     else "before" if still == damaged
                     else "mid-repair" if still else "after")
        outcomes.append((cmd, ("" if anywhere else "+") + "%.2f" % delay, state, len(still)))
        # The interrupted command again, through the new daemon.
        c.rerun(cmd, what)
        code, _ = d.stop()
        assert code == 0, d.log_text()
    # Timing decides how many: at least a third (8 to 11 of 12 in the runs
    # seen so far), at least one, and in the normal build (6 rounds of
    # each) at least one of each kind.
    report_mid_work(outcomes, ("mid-rebuild", "mid-repair"), t_start,
                    max(1, N_DAEMON_KILLS // 3), N_DAEMON_KILLS >= 12)


def test_kill_client_mid_rebuild(tmp):
    t_start = time.monotonic()
    rng = seed_rng("test_kill_client_mid_rebuild")
    c = Corpus(tmp)
    root = c.root
    d = c.start()
    took = {cmd: c.timed(cmd, rng)[0] for cmd in COMMANDS}
    outcomes = []
    for k in range(N_CLIENT_KILLS):
        cmd = ("replay", "repair")[k % 2]
        damaged, _ = damage(root, rng, c.cids, rng.randint(80, 120) if cmd == "repair" else 30)
        old_by = per_conversation(dump(mirror_db(root)))
        replays = status(root)["replays"]
        delay = rng.uniform(0.02, took[cmd] * 1.1)
        p = spawn(COMMANDS[cmd], root=root)
        try:
            p.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
        answered = p.poll() is not None
        p.kill()  # SIGKILL the client: the random kill point
        p.communicate()
        what = "round %d (%s, client killed at %.2f s)" % (k, cmd, delay)
        # The daemon keeps running and answers at once, even mid-request.
        t0 = time.monotonic()
        st = status(root)
        busy = st["busy"] == "request"
        r = run_cli("status", root=root, timeout=30)
        assert r.code == 0 and "running (pid %d" % d.pid in r.out, (what, r)
        status_ms = (time.monotonic() - t0) * 1000
        assert status_ms < 5000, (what, status_ms)
        assert d.alive(), (what, d.log_text())
        wait_caught_up(root, len(c.cids))
        assert d.alive() and status(root)["pid"] == d.pid, what
        # What the daemon did for a client that was gone: all of it, or
        # (killed before it asked) nothing.
        still = c.assert_states(what, old_by, damaged, whole=cmd == "replay")
        if cmd == "replay":
            done = status(root)["replays"] - replays
            assert (done, still) in ((1, []), (0, damaged)), (what, done, len(still))
        else:
            assert still in ([], damaged), (what, len(still), len(damaged))
        outcomes.append((cmd, round(delay, 2), "answered" if answered else
                         "daemon busy with it" if busy else "idle", len(still),
                         round(status_ms)))
        c.rerun(cmd, what)
    code, _ = d.stop()
    assert code == 0, d.log_text()
    note("client kills (command, delay, daemon at the kill, conversations still damaged "
         "after, ms for status): %s" % outcomes)
    busy = sum(o[2] == "daemon busy with it" for o in outcomes)
    note("%d of %d clients killed while the daemon did their work; whole test %.1f s"
         % (busy, len(outcomes), time.monotonic() - t_start))
    assert busy >= max(1, N_CLIENT_KILLS // 3), outcomes


def delete_mirror(root):
    """The mirror's files removed under the running daemon, as a user or a
    cleaner might: the daemon still has the old inode open."""
    db = mirror_db(root)
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(db + suffix)
        except FileNotFoundError:
            pass


def has_schema(db):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        return c.execute("SELECT count(*) FROM sqlite_master WHERE name = 'messages'"
                         ).fetchone()[0] == 1
    finally:
        c.close()


def rows_state(c, what, old_by, damaged):
    """Corpus.check_rows on a mirror that may lack conversations (or its
    tables): (conversations still as damaged, conversations present)."""
    db = mirror_db(c.root)
    if not has_schema(db):  # created, not yet migrated, when killed
        assert integrity(db) == [("ok",)], what
        return list(damaged), 0
    got = c.check_rows(what, old_by)
    return [x for x in damaged if got.get(x) != c.clean_by[x]], len(got)


def test_kill9_daemon_other_work(tmp):
    """The work jmirrord does besides replay --all / verify --repair,
    killed: `jmirror replay ID...` of damaged conversations (each in its
    own transaction), and the rebuild it starts by itself when its mirror
    was deleted under it (asked by a plain `jmirror verify`).  After a
    restart the mirror must hold every conversation exactly as before or
    exactly clean; for the deleted mirror the restarted daemon alone must
    converge (nobody asks again), and no scratch file may be left."""
    t_start = time.monotonic()
    rng = seed_rng("test_kill9_daemon_other_work")
    c = Corpus(tmp)
    root = c.root
    n_rounds = rounds(4 if SANITIZED else 8, 40)

    def ask(kind, damaged):
        if kind == "ids":
            return spawn(["replay"] + damaged, root=root)
        delete_mirror(root)
        return spawn(["verify"], root=root)

    def prepare(kind):
        if kind == "ids":
            # Most of them: small files replay in a few ms each.
            damaged, tampered = damage(root, rng, c.cids, rng.randint(200, len(c.cids)))
            n = len(tampered)
            return damaged, lambda: still_tampered(root, tampered) < n
        return [], lambda: os.path.exists(rebuild_file(root))

    # Uninterrupted, through the daemon: (from the client's start, from
    # the work seen to start) to the answer, the shorter of two.
    c.start()
    took = {}
    for kind in ("ids", "deleted"):
        best = None
        for _ in range(2):
            damaged, started = prepare(kind)
            t0 = time.monotonic()
            p = ask(kind, damaged)
            # (a quick run may end before a poll sees it start)
            t1 = time.monotonic() if poll(started, p) else t0
            if kind == "deleted":  # the rebuild: while its scratch file exists
                poll(lambda: not os.path.exists(rebuild_file(root)), p)
            t2 = time.monotonic()
            out, err = reap(p, 300)
            if kind == "ids":
                t2 = time.monotonic()
            assert p.returncode == 0, (kind, out, err)
            if kind == "deleted":
                assert "0 behind, 0 drift" in out and "rebuilt it first" in err, (out, err)
            wait_caught_up(root, len(c.cids))
            c.assert_converged("uninterrupted " + kind)
            best = min(best or (t2 - t0, t2 - t1), (t2 - t0, t2 - t1))
        took[kind] = best
    c.d.stop()
    note("through the daemon: replay of 200-300 damaged ids %.2f s (%.2f s from the first "
         "repaired), rebuild of a deleted mirror %.2f s to its end (%.2f s of it with its scratch database); "
         "%d rounds%s" % (took["ids"][0], took["ids"][1], took["deleted"][0],
                          took["deleted"][1], n_rounds, " [sanitized]" if SANITIZED else ""))
    outcomes = []
    for k in range(n_rounds):
        kind = ("ids", "deleted")[k % 2]
        d = c.start()
        damaged, started = prepare(kind)
        old_by = per_conversation(dump(mirror_db(root)))
        anywhere = k % 4 >= 2
        t = took[kind][0 if anywhere else 1]
        delay = rng.uniform(0.02 if anywhere else 0, t * 1.1)
        p = ask(kind, damaged)
        kill_daemon_at(d, p, delay, None if anywhere else started)
        left = os.path.exists(rebuild_file(root))
        db_there = os.path.exists(mirror_db(root))
        out, err = reap(p, 60)
        what = "round %d (%s, daemon killed %.2f s after %s)" % (
            k, kind, delay, "the client's start" if anywhere else "the work started")
        if p.returncode != 0:
            # Its daemon died under it (one line saying so), or it found no
            # daemon and verified the deleted mirror itself: behind.
            assert p.returncode == 1, (what, out, err)
            assert "jmirrord" in err or (kind == "deleted" and "behind" in out), (what, out, err)
        if db_there:
            still, present = rows_state(c, what, old_by, damaged)
        else:
            still, present = damaged, 0
        if kind == "ids":
            assert present == len(c.cids), what
            state = ("answered" if p.returncode == 0 else "before" if still == damaged
                     else "mid-replay" if still else "after")
            if p.returncode == 0:
                assert still == [], (what, "answered, yet not done", len(still))
        else:
            # (a client that found its daemon gone verifies by itself, and
            # brings the mirror up to date first)
            by_daemon = "rebuilt it first" in err
            state = ("mid-rebuild" if left else "answered" if p.returncode == 0 and by_daemon
                     else "by the client" if p.returncode == 0
                     else "no mirror" if not db_there
                     else "after" if present == len(c.cids) else "empty")
        outcomes.append((kind, ("" if anywhere else "+") + "%.2f" % delay, state, len(still)))
        d = c.start()
        assert not os.path.exists(rebuild_file(root)), (what, "scratch left after a restart")
        st = status(root)
        assert st["last_error"] is None, (what, st)
        if kind == "ids":
            r = run_cli("replay", *damaged, root=root, timeout=300)
            assert r.code == 0 and "by jmirrord" in r.out, (what, r)
            wait_caught_up(root, len(c.cids))
        # The deleted mirror: converged by the restarted daemon alone.
        c.assert_converged(what)
        code, _ = d.stop()
        assert code == 0, d.log_text()
    # 4 to 7 of 8 in the runs seen
    report_mid_work(outcomes, ("mid-replay", "mid-rebuild"), t_start,
                    max(1, n_rounds // 4), n_rounds >= 8)


if __name__ == "__main__":
    run(globals())
