"""End-to-end tests of the mirror commands: the real `jmirror` binary on real
journal files and a real SQLite mirror.

Journals are written byte for byte here (explicit ts, bad lines on purpose),
as any program in another language may write them, or with `jmirror append`.
Rows are read with Python's own sqlite3 module.  Every drift case breaks the
mirror or the journal one way, then checks that `verify` reports it (exit 1,
state and detail in --json), `verify --repair` fixes it, a second `verify`
is clean, and the rows equal those of a clean `replay --all` into a separate
mirror (--mirror).
"""
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import Daemon, run, run_cli, wait_rows  # noqa: E402

# --------------------------------------------------------------------------
# Helpers.


def ts(sec, frac=""):
    return "2026-03-04T05:%02d:%02d%sZ" % (sec // 60 % 60, sec % 60, frac)


def ev(typ, sec, **kw):
    e = {"type": typ, "ts": ts(sec)}
    e.update(kw)
    return json.dumps(e, ensure_ascii=False, separators=(",", ":"))


def jfile(root, cid):
    return os.path.join(root, "journal", cid + ".jsonl")


def db_of(root):
    return os.path.join(root, "mirror", "mirror.db")


def write(root, cid, data, mode="wb"):
    os.makedirs(os.path.join(root, "journal"), mode=0o700, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(jfile(root, cid), mode) as f:
        f.write(data)


def lines(*ls):
    return "".join(l + "\n" for l in ls)


def conversation(cid, n, start=0):
    """A conversation of n turns: user messages, streamed answers (deltas +
    end), an edit, a delete, a bad line and an unknown event."""
    out = [ev("conversation.created", start, title="chat " + cid, brain="b1",
              meta={"tags": ["x", cid]})]
    t = start + 1
    for i in range(n):
        out.append(ev("message", t, id="u%d" % i, role="user", content="question %d é" % i))
        out.append(ev("message.delta", t + 1, id="a%d" % i, parent_id="u%d" % i, text="ans"))
        out.append(ev("message.delta", t + 2, id="a%d" % i, text="wer %d" % i, thinking="th"))
        out.append(ev("message.end", t + 3, id="a%d" % i, stop_reason="end_turn",
                      usage={"in": i, "out": 2 * i}))
        t += 4
        if i % 5 == 2:
            out.append(ev("message.edited", t, id="u%d" % i, content="edited %d" % i))
        if i % 7 == 3:
            out.append(ev("message.deleted", t, id="a%d" % (i - 1)))
        if i % 6 == 4:
            out.append('{"type":"message","id":"x"}')  # bad: missing members
        if i % 9 == 1:
            out.append(ev("x.reaction", t, id="u%d" % i, emoji="+1"))
    return lines(*out)


def corpus(root, sizes=(("alpha", 12), ("beta", 30), ("gamma", 5))):
    for i, (cid, n) in enumerate(sizes):
        write(root, cid, conversation(cid, n, start=100 * i))
    r = run_cli("ingest", root=root)
    assert r.code == 0, r
    return [cid for cid, _ in sizes]


def connect_ro(path):
    return sqlite3.connect("file:%s?mode=ro" % path, uri=True)


def dump(path):
    """Every row of the mirror, ordered, sources by offset and line count."""
    c = connect_ro(path)
    try:
        return (
            c.execute("SELECT * FROM conversations ORDER BY id").fetchall(),
            c.execute("SELECT * FROM messages ORDER BY conversation_id, seq").fetchall(),
            c.execute("SELECT * FROM bad_lines ORDER BY conversation_id, line").fetchall(),
            c.execute("SELECT conversation_id, byte_offset, lines FROM sources"
                      " ORDER BY conversation_id").fetchall(),
        )
    finally:
        c.close()


def query(path, sql, args=()):
    c = connect_ro(path)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def modify(path, *sqls):
    c = sqlite3.connect(path)
    try:
        for s in sqls:
            c.execute(s)
        c.commit()
    finally:
        c.close()


def clean_dump(root, tmp, name="clean.db"):
    """The rows of a clean replay --all into a mirror of its own."""
    path = os.path.join(tmp, name)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.unlink(path + suffix)
    r = run_cli("--mirror", path, "replay", "--all", root=root)
    assert r.code == 0, r
    return dump(path)


def verify_json(root, *args):
    r = run_cli("verify", "--json", *args, root=root)
    assert r.err == "", r
    out = json.loads(r.out)
    return r.code, out, {c["conversation"]: c for c in out["conversations"]}


SUMMARY = re.compile(r"^verified (\d+) conversations?: (\d+) ok, (\d+) behind, (\d+) drift$")


def summary(text):
    m = SUMMARY.match(text.splitlines()[-1])
    assert m, text
    return tuple(int(x) for x in m.groups())


def assert_clean(root, tmp, n):
    r = run_cli("verify", root=root)
    assert r.code == 0, r
    assert summary(r.out) == (n, n, 0, 0), r
    code, out, by = verify_json(root)
    assert code == 0 and out["ok"] == n and out["drift"] == 0 and out["behind"] == 0, out
    assert dump(db_of(root)) == clean_dump(root, tmp), "mirror differs from a clean replay"


def drift_cycle(root, tmp, ids, drifted, detail, n=None):
    """verify reports `drifted` (with `detail` in each), --repair fixes it,
    verify is then clean and the rows equal a clean replay."""
    n = len(ids) if n is None else n
    r = run_cli("verify", root=root)
    assert r.code == 1, r
    assert summary(r.out) == (n, n - len(drifted), 0, len(drifted)), r
    for cid in drifted:
        assert re.search(r"^drift +%s: .*%s" % (re.escape(cid), re.escape(detail)),
                         r.out, re.M), (cid, detail, r.out)
    code, out, by = verify_json(root)
    assert code == 1, out
    assert (out["checked"], out["drift"]) == (n, len(drifted)), out
    for cid in ids:
        item = by[cid]
        if cid in drifted:
            assert item["state"] == "drift" and detail in item["detail"], item
        else:
            assert item["state"] == "ok" and item["detail"] == "", item
    r = run_cli("verify", "--repair", root=root)
    assert r.code == 0, r
    for cid in drifted:
        assert "repaired %s (replayed)" % cid in r.out, r
    assert "before repair:" in r.out, r
    assert summary(r.out) == (n, n, 0, 0), r
    assert_clean(root, tmp, n)


# --------------------------------------------------------------------------
# Drift: the mirror changed behind jmirror's back.

def test_drift_deleted_message_rows(tmp):
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    assert_clean(root, tmp, 3)
    modify(db_of(root), "DELETE FROM messages WHERE conversation_id = 'beta'"
                        " AND id IN ('u3', 'a7')")
    drift_cycle(root, tmp, ids, ["beta"], "2 missing messages ('u3', 'a7')")


def test_drift_changed_content(tmp):
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    modify(db_of(root), "UPDATE messages SET content = 'tampered' WHERE"
                        " conversation_id = 'alpha' AND id = 'a4'")
    drift_cycle(root, tmp, ids, ["alpha"], "1 changed message ('a4': content)")
    # An extra row, a changed conversation column and a bad-line record.
    modify(db_of(root),
           "INSERT INTO messages (conversation_id, id, seq, role, content,"
           " status, created_at, updated_at) SELECT 'gamma', 'ghost', 999,"
           " 'user', 'boo', 'complete', created_at, updated_at FROM"
           " conversations WHERE id = 'gamma'",
           "UPDATE conversations SET title = 'renamed' WHERE id = 'beta'",
           "DELETE FROM bad_lines WHERE conversation_id = 'beta'")
    code, out, by = verify_json(root)
    assert code == 1 and out["drift"] == 2, out
    assert by["gamma"]["extra"] == 1 and "1 extra message ('ghost')" in by["gamma"]["detail"], by
    assert "conversation differs in title" in by["beta"]["detail"], by
    assert "bad-line record" in by["beta"]["detail"], by
    drift_cycle(root, tmp, ids, ["beta", "gamma"], "")


def test_drift_deleted_conversation_row(tmp):
    """Deleted by hand with foreign keys off (Python's default): the message
    rows stay behind without their conversation; repair must still work."""
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    modify(db_of(root), "DELETE FROM conversations WHERE id = 'gamma'")
    assert query(db_of(root), "SELECT count(*) FROM messages WHERE"
                              " conversation_id = 'gamma'")[0][0] > 0
    drift_cycle(root, tmp, ids, ["gamma"], "conversation row missing")


def test_drift_corrupt_db(tmp):
    """Pages of the database overwritten: rows cannot be compared, verify
    says it is corrupt (exit 1); --repair rebuilds it from the journal."""
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    path = db_of(root)
    size = os.path.getsize(path)
    assert size >= 16 * 4096, size
    with open(path, "r+b") as f:
        for page in range(3, size // 4096, 2):
            f.seek(page * 4096 + 100)
            f.write(bytes((page * 37 + i) % 251 for i in range(3000)))
    for args in (["verify"], ["verify", "--json"]):
        r = run_cli(*args, root=root)
        assert r.code == 1 and r.out == "", r
        assert "is corrupt" in r.err and "verify --repair" in r.err, r
    r = run_cli("verify", "--repair", root=root)
    assert r.code == 0, r
    assert "rebuilding it" in r.err, r
    assert summary(r.out) == (3, 3, 0, 0), r
    assert_clean(root, tmp, len(ids))


def test_damaged_first_page(tmp):
    """A mirror whose first page is damaged is not a database at all: SQLite
    cannot even set its journal mode.  The mirror is derived, so replay
    --all and verify --repair set it aside as <db>.damaged, start anew and
    rebuild it from the journal; plain verify says how to repair it."""
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    path = db_of(root)

    def damage(how):
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        if how == "garbage":
            with open(path, "r+b") as f:
                f.write(b"this is not a database header!!")
        elif how == "zeros":
            with open(path, "r+b") as f:
                f.write(bytes(4096))
        elif how == "short":
            os.truncate(path, 100)

    for how, args in (("garbage", ["replay", "--all"]), ("zeros", ["verify", "--repair"]),
                      ("short", ["replay", "--all"]), ("garbage", ["verify", "--repair"])):
        damage(how)
        r = run_cli("verify", root=root)
        assert r.code == 1 and "verify --repair" in r.err, (how, r)
        r = run_cli(*args, root=root)
        assert r.code == 0, (how, args, r)
        assert "was damaged" in r.err and ".damaged" in r.err, (how, r)
        assert os.path.exists(path + ".damaged"), how
        assert_clean(root, tmp, len(ids))


def random_journal(rng, n, ids):
    """n random message events over `ids`: created (whole or by a delta),
    edited, deleted and re-created; one in 20 carries 128 KiB of content."""
    out, live = [], set()
    for i in range(n):
        mid = rng.choice(ids)
        r = rng.random()
        pad = "x" * (131072 if rng.random() < 0.05 else rng.randint(1, 50))
        ts = {"ts": "2026-01-01T00:00:%02dZ" % (i % 60)}
        if mid in live and r < 0.3:
            e = dict(type="message.deleted", id=mid, **ts)
            live.discard(mid)
        elif mid in live and r < 0.45:
            e = dict(type="message.edited", id=mid, content="e" + pad, **ts)
        elif r < 0.6:
            e = dict(type="message.delta", id=mid, text="d" + pad, **ts)
            live.add(mid)
        else:
            e = dict(type="message", id=mid, role="user", content="c%d" % i + pad, **ts)
            live.add(mid)
        out.append(json.dumps(e) + "\n")
    return "".join(out)


def test_replay_in_place_across_flushes(tmp):
    """replay <id> over rows of another version of the file, both bigger
    than the 8 MiB the fold holds before it writes: messages deleted and
    re-created after a flush, seqs moved.  Once 'UNIQUE constraint failed:
    messages.conversation_id, messages.seq' (this seed did it); the rows
    must equal a fresh replay's."""
    rng = random.Random(202)
    root = os.path.join(tmp, "root")
    ids = ["m%d" % k for k in range(rng.randint(3, 300))]
    old = random_journal(rng, rng.randint(1500, 3000), ids)
    write(root, "c1", old.encode())
    assert run_cli("ingest", root=root).code == 0
    if rng.random() < 0.5:
        new = random_journal(rng, rng.randint(1500, 3000), ids)
    else:
        kept = old.splitlines(True)
        new = "".join(kept[:rng.randint(0, len(kept))]) + random_journal(
            rng, rng.randint(100, 300), ids)
    assert min(len(old), len(new)) > 8 << 20, (len(old), len(new))
    write(root, "c1", new.encode())
    r = run_cli("replay", "c1", "--threads", "1", root=root)
    assert r.code == 0, r
    fresh = os.path.join(tmp, "fresh.db")
    assert run_cli("--mirror", fresh, "replay", "c1", root=root).code == 0
    assert dump(db_of(root)) == dump(fresh)
    assert_clean(root, tmp, 1)


def test_damaged_schema_pages(tmp):
    """A valid first page over unreadable tables: the schema version cannot
    be read (once taken for "version 0": the first migration ran again and
    failed on 'table conversations already exists').  replay --all and
    verify --repair set it aside and rebuild it like a damaged header; a
    damaged table they do not read on opening is overwritten by the
    rebuild."""
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    path = db_of(root)
    c = sqlite3.connect(path)
    roots = dict(c.execute("SELECT name, rootpage FROM sqlite_master WHERE name IN"
                           " ('_migrations', 'settings')").fetchall())
    page = c.execute("PRAGMA page_size").fetchone()[0]
    c.close()
    assert set(roots) == {"_migrations", "settings"}, roots
    for table, args in (("_migrations", ["replay", "--all"]), ("settings", ["replay", "--all"]),
                        ("_migrations", ["verify", "--repair"]), ("settings", ["verify", "--repair"])):
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.unlink(path + suffix)
        with open(path, "r+b") as f:
            f.seek((roots[table] - 1) * page)
            f.write(b"\xa5" * page)
        r = run_cli(*args, root=root)
        assert r.code == 0, (table, args, r)
        if table == "_migrations":  # (settings may be read only later)
            assert "was damaged" in r.err and ".damaged" in r.err, (table, r)
        assert_clean(root, tmp, len(ids))


def test_rebuild_refused_without_journal(tmp):
    """replay --all with journal/ gone (mid-restore, a wrong mount) would
    fold nothing and leave an empty mirror: refused, naming the directory,
    mirror unchanged -- even an empty one (a wrong --root).  An existing,
    empty journal/ is an empty mirror."""
    empty = os.path.join(tmp, "empty")
    r = run_cli("replay", "--all", root=empty)
    assert r.code == 1 and os.path.join(empty, "journal") in r.err, r
    assert "is missing" in r.err and r.out == "", r
    os.makedirs(os.path.join(empty, "journal"))
    r = run_cli("replay", "--all", root=empty)
    assert r.code == 0 and r.out.startswith("replayed 0 conversations"), r
    assert_clean(empty, tmp, 0)
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    before = dump(db_of(root))
    os.rename(os.path.join(root, "journal"), os.path.join(root, "journal.away"))
    r = run_cli("replay", "--all", root=root)
    assert r.code == 1 and "journal" in r.err and "is missing" in r.err, r
    assert len(r.err.strip().splitlines()) == 1, r
    assert dump(db_of(root)) == before
    os.rename(os.path.join(root, "journal.away"), os.path.join(root, "journal"))
    assert_clean(root, tmp, len(ids))


def test_rebuild_other_page_size(tmp):
    """A live mirror with another page size (made or VACUUMed by another
    tool) is rebuilt all the same: the online backup cannot change the page
    size of a WAL database, so the scratch file takes the live one's."""
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    db = sqlite3.connect(db_of(root))
    db.execute("PRAGMA journal_mode=DELETE")
    db.execute("PRAGMA page_size=8192")
    db.execute("VACUUM")
    db.execute("PRAGMA journal_mode=WAL")
    db.close()
    r = run_cli("replay", "--all", root=root)
    assert r.code == 0, r
    assert query(db_of(root), "PRAGMA page_size") == [(8192,)]
    assert_clean(root, tmp, len(ids))


def test_drift_deleted_db(tmp):
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    for suffix in ("", "-wal", "-shm"):
        p = db_of(root) + suffix
        if os.path.exists(p):
            os.unlink(p)
    # verify of a missing mirror: an empty one, where nothing is ingested
    # yet: behind (not drift), and --repair catches up.
    r = run_cli("verify", root=root)
    assert r.code == 0 and summary(r.out) == (3, 0, 3, 0), r
    for cid in ids:
        assert re.search(r"^behind +%s: not in the mirror yet" % cid, r.out, re.M), r
    r = run_cli("verify", "--repair", root=root)
    assert r.code == 0 and summary(r.out) == (3, 3, 0, 0), r
    assert_clean(root, tmp, len(ids))


def test_drift_deleted_wal_after_clean_close(tmp):
    """When the last connection closes cleanly SQLite checkpoints the WAL into
    the database and removes it: deleting -wal afterwards loses nothing, so
    the mirror is consistent and verify is clean."""
    root = os.path.join(tmp, "root")
    corpus(root)
    wal = db_of(root) + "-wal"
    if os.path.exists(wal):
        assert os.path.getsize(wal) == 0, "a closed mirror left WAL frames"
        os.unlink(wal)
    assert_clean(root, tmp, 3)


def test_drift_deleted_wal_with_frames(tmp):
    """A reader keeps the mirror open while `jmirror ingest` commits, so the
    commits stay in -wal (only the last connection checkpoints on close);
    the reader then dies (SIGKILL) and -wal is deleted while no process has
    the mirror open.  Expected: the database file still holds the last
    checkpointed state, which is a committed, self-consistent one (rows and
    offsets move together in each transaction): the mirror is *behind*, never
    drifted: verify exits 0 and says behind; --repair catches it up."""
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    before = dump(db_of(root))
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1])\n"
         "c.execute('SELECT count(*) FROM conversations').fetchall()\n"
         "print('ready', flush=True)\n"
         "sys.stdin.read()\n", db_of(root)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"ready\n"
        write(root, "alpha", lines(ev("message", 900, id="late", role="user",
                                      content="after")), "ab")
        write(root, "gamma", lines(ev("message.edited", 901, id="u1", content="e")), "ab")
        r = run_cli("ingest", root=root)
        assert r.code == 0 and r.out.startswith("ingested 2 of 3 files"), r
        wal = db_of(root) + "-wal"
        assert os.path.getsize(wal) > 0, "the commits should still be in -wal"
    finally:
        holder.kill()
        holder.wait()
    os.unlink(wal)
    assert dump(db_of(root)) == before, "the mirror went back to the last checkpoint"
    r = run_cli("verify", root=root)
    assert r.code == 0, r
    assert summary(r.out) == (3, 1, 2, 0), r
    code, out, by = verify_json(root)
    assert code == 0, out
    for cid in ("alpha", "gamma"):
        assert by[cid]["state"] == "behind", by[cid]
        assert by[cid]["mirror_offset"] < by[cid]["file_offset"], by[cid]
        assert "mirror has" in by[cid]["detail"], by[cid]
    assert by["beta"]["state"] == "ok", by
    r = run_cli("verify", "--repair", root=root)
    assert r.code == 0, r
    assert "caught up alpha" in r.out and "caught up gamma" in r.out, r
    assert_clean(root, tmp, len(ids))
    assert query(db_of(root), "SELECT content FROM messages WHERE id = 'late'") == [("after",)]


def test_drift_truncated_journal(tmp):
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    path = jfile(root, "beta")
    data = open(path, "rb").read()
    cut = data.rindex(b"\n", 0, len(data) // 2) + 1
    os.truncate(path, cut)
    drift_cycle(root, tmp, ids, ["beta"], "file is %d bytes, smaller than the %d ingested"
                % (cut, len(data)))
    # Cut mid-line: the fragment is a pending tail, not a line.
    os.truncate(path, cut - 10)
    drift_cycle(root, tmp, ids, ["beta"], "smaller than the %d ingested" % cut)
    code, out, by = verify_json(root)
    assert by["beta"]["file_offset"] == data.rindex(b"\n", 0, cut - 10) + 1, by


def test_drift_replaced_by_older_copy(tmp):
    root = os.path.join(tmp, "root")
    old = os.path.join(tmp, "alpha.old")
    write(root, "alpha", conversation("alpha", 4))
    shutil.copyfile(jfile(root, "alpha"), old)
    write(root, "alpha", conversation("alpha", 12))
    write(root, "beta", conversation("beta", 3))
    assert run_cli("ingest", root=root).code == 0
    ino = os.stat(jfile(root, "alpha")).st_ino
    os.rename(old, jfile(root, "alpha"))  # restored from a backup: new inode
    assert os.stat(jfile(root, "alpha")).st_ino != ino
    drift_cycle(root, tmp, ["alpha", "beta"], ["alpha"], "smaller than the")
    assert query(db_of(root), "SELECT count(*) FROM messages WHERE"
                              " conversation_id = 'alpha' AND id = 'u5'") == [(0,)]


def test_drift_replaced_same_size(tmp):
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    # A different file of the same size, first line differs.
    path = jfile(root, "gamma")
    data = open(path, "rb").read()
    other = data.replace(b'"title":"chat gamma"', b'"title":"chat GAMMA"', 1)
    assert other != data and len(other) == len(data)
    tmpf = os.path.join(root, "journal", "gamma.tmp")
    with open(tmpf, "wb") as f:
        f.write(other)
    os.rename(tmpf, path)
    drift_cycle(root, tmp, ids, ["gamma"], "first line differs")
    assert query(db_of(root), "SELECT title FROM conversations WHERE id = 'gamma'") == [
        ("chat GAMMA",)]
    # Same size, same first line and last 4 KiB: only a row by row fold sees
    # it (ingest checks the head and the tail).
    path = jfile(root, "beta")
    data = open(path, "rb").read()
    assert len(data) > 12000
    at = data.index(b"question 3 ")
    assert at < len(data) - 5000
    other = data[:at] + b"QUESTION 3 " + data[at + 11:]
    assert len(other) == len(data)
    with open(tmpf, "wb") as f:
        f.write(other)
    os.rename(tmpf, path)
    r = run_cli("ingest", root=root)
    assert r.code == 0 and "0 replayed" in r.out, r
    drift_cycle(root, tmp, ids, ["beta"], "1 changed message ('u3': content")


def test_drift_file_gone_and_never_ingested(tmp):
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    os.unlink(jfile(root, "gamma"))
    write(root, "delta", conversation("delta", 2))
    code, out, by = verify_json(root)
    assert code == 1 and out["checked"] == 4 and out["drift"] == 1, out
    assert "journal file is missing" in by["gamma"]["detail"], by
    assert by["delta"]["state"] == "behind", by
    assert by["delta"]["detail"].startswith("not in the mirror yet"), by
    r = run_cli("verify", "--repair", root=root)
    assert r.code == 0, r
    assert query(db_of(root), "SELECT id FROM conversations ORDER BY id") == [
        ("alpha",), ("beta",), ("delta",)]
    assert_clean(root, tmp, 3)
    del ids


def test_behind_is_not_drift(tmp):
    root = os.path.join(tmp, "root")
    corpus(root)
    size = os.path.getsize(jfile(root, "alpha"))
    write(root, "alpha", lines(ev("message", 950, id="n1", role="user", content="new")), "ab")
    write(root, "alpha", '{"type":"message","id":"tail"', "ab")  # pending
    r = run_cli("verify", root=root)
    assert r.code == 0, r
    assert summary(r.out) == (3, 2, 1, 0), r
    assert re.search(r"^behind alpha: mirror has %d of \d+ bytes" % size, r.out, re.M), r
    code, out, by = verify_json(root, "alpha")
    assert code == 0 and out["checked"] == 1 and out["behind"] == 1, out
    item = by["alpha"]
    assert item["mirror_offset"] == size, item
    assert item["file_offset"] == os.path.getsize(jfile(root, "alpha")) - len(
        '{"type":"message","id":"tail"'), item
    r = run_cli("verify", "--repair", root=root)
    assert r.code == 0 and "caught up alpha" in r.out, r
    code, out, by = verify_json(root)
    assert code == 0 and out["ok"] == 3, out


def test_verify_during_ingest(tmp):
    """verify judges one snapshot of the mirror: while files grow and
    `jmirror ingest` commits over and over, it may call conversations
    behind but never drift."""
    import threading
    root = os.path.join(tmp, "root")
    ids = corpus(root)
    stop = threading.Event()
    errors = []
    rounds = [0]

    def writer():
        i = 0
        try:
            while not stop.is_set():
                for cid in ids:
                    # half a line, then the rest: a writer mid-append
                    line = ev("message.delta", 2000 + i, id="s%d" % (i // 7), text="x%d " % i)
                    write(root, cid, line[:len(line) // 2], "ab")
                    write(root, cid, line[len(line) // 2:] + "\n", "ab")
                    i += 1
                r = run_cli("ingest", root=root)
                if r.code != 0:
                    errors.append(r)
                    return
                rounds[0] += 1
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    t = threading.Thread(target=writer)
    t.start()
    seen = {"ok": 0, "behind": 0}
    try:
        for _ in range(12):
            code, out, by = verify_json(root)
            assert code == 0 and out["drift"] == 0, [
                c for c in out["conversations"] if c["state"] == "drift"]
            seen["ok"] += out["ok"]
            seen["behind"] += out["behind"]
    finally:
        stop.set()
        t.join()
    assert not errors, errors
    assert rounds[0] > 0
    print("# %d ingest rounds; verify saw %d ok, %d behind" % (
        rounds[0], seen["ok"], seen["behind"]), flush=True)
    assert run_cli("ingest", root=root).code == 0
    assert_clean(root, tmp, len(ids))


# --------------------------------------------------------------------------
# replay, ingest and verify: summaries and --json shapes.

def test_replay_summaries(tmp):
    root = os.path.join(tmp, "root")
    write(root, "c1", lines(ev("message", 1, id="m1", role="user", content="a"),
                            "{bad", "",
                            ev("message.delta", 2, id="m2", text="b"),
                            ev("x.new", 3)))
    write(root, "c2", lines(ev("message", 4, id="m1", role="user", content="a"), "[1]")
          + '{"type":"mess')  # pending tail: not read
    write(root, "c3", b"")
    with open(os.path.join(root, "journal", "Not-Valid.jsonl"), "w") as f:
        f.write("x\n")
    complete = sum(os.path.getsize(jfile(root, c)) for c in ("c1", "c2", "c3")) - len(
        '{"type":"mess')
    r = run_cli("replay", "--all", root=root)
    assert r.code == 0, r
    m = re.match(r"^replayed 3 conversations: 4 events, 2 bad lines, [\d.]+ MB in [\d.]+ s"
                 r" \(\d+ events/s\) \(some files in journal/ ignored\);"
                 r" search index built in [\d.]+ s\n$", r.out)
    assert m, r
    assert r.err == "", r
    r = run_cli("replay", "--all", "--json", "--threads", "2", root=root)
    assert r.code == 0, r
    out = json.loads(r.out)
    # (members may be added; these are promised)
    assert {"conversations", "events", "bad_lines", "bytes", "ignored_files",
            "seconds", "events_per_second"} <= set(out), out
    assert (out["conversations"], out["events"], out["bad_lines"], out["ignored_files"]) == (
        3, 4, 2, 1), out
    assert out["bytes"] == complete, (out, complete)
    assert isinstance(out["seconds"], float) and isinstance(out["events_per_second"], float)
    # One conversation, then several.
    r = run_cli("replay", "c1", root=root)
    assert r.code == 0 and re.fullmatch(
        r"replayed 1 conversation: 3 events, 1 bad lines in [\d.]+ s \(\d+ events/s\)\n",
        r.out), r
    # An id without a journal file: an error naming the file, exit 1, no
    # entry and no summary for it; the others are replayed all the same.
    r = run_cli("replay", "c1", "c2", "gone", "--json", root=root)
    assert r.code == 1, r
    assert r.err == "jmirror: no journal file '%s': nothing to replay for 'gone' (it is not " \
        "in the mirror)\n" % jfile(root, "gone"), r
    out = json.loads(r.out)
    assert out == [
        {"conversation": "c1", "events": 3, "bad_lines": 1,
         "bytes": os.path.getsize(jfile(root, "c1")), "removed": False},
        {"conversation": "c2", "events": 1, "bad_lines": 1,
         "bytes": os.path.getsize(jfile(root, "c2")) - len('{"type":"mess'), "removed": False},
    ], out
    r = run_cli("replay", "gone", root=root)
    assert r.code == 1 and r.out == "" and "no journal file" in r.err, r
    assert len(r.err.splitlines()) == 1, r
    # A conversation whose file went away: the same error; the mirror
    # follows journal/, so its rows are removed.
    os.unlink(jfile(root, "c2"))
    r = run_cli("replay", "c2", root=root)
    assert r.code == 1 and r.out == "", r
    assert r.err == "jmirror: no journal file '%s': nothing to replay for 'c2' (it is not " \
        "in the mirror)\n" % jfile(root, "c2"), r
    assert query(db_of(root), "SELECT id FROM conversations ORDER BY id") == [("c1",), ("c3",)]
    assert query(db_of(root), "SELECT count(*) FROM messages WHERE conversation_id = 'c2'") == [(0,)]
    assert_clean(root, tmp, 2)


def test_many_ids(tmp):
    """Any number of ids on the command line (there was a limit of 64),
    options mixed in among them."""
    root = os.path.join(tmp, "root")
    ids = ["c%03d" % i for i in range(300)]
    for i, cid in enumerate(ids):
        write(root, cid, lines(ev("message", i, id="m1", role="user", content=cid)))
    args = ids[:150] + ["--json"] + ids[150:]
    r = run_cli("replay", *args, root=root)
    assert r.code == 0, r
    assert [o["conversation"] for o in json.loads(r.out)] == ids, r
    r = run_cli("verify", "--json", *ids, root=root)
    assert r.code == 0, r
    assert query(db_of(root), "SELECT count(*) FROM messages") == [(300,)]


def test_replay_missing_via_daemon(tmp):
    """With jmirrord running the replay is done by it; an id without a
    journal file is the same error, exit 1, and no summary unless another
    conversation was replayed."""
    root = os.path.join(tmp, "root")
    write(root, "c1", lines(ev("message", 1, id="m1", role="user", content="a")))
    with Daemon(root):
        wait_rows(root, 1)
        r = run_cli("replay", "gone", root=root)
        assert r.code == 1 and r.out == "", r
        assert r.err == "jmirror: no journal file '%s': nothing to replay for 'gone' (it is not " \
            "in the mirror)\n" % jfile(root, "gone"), r
        r = run_cli("replay", "c1", "gone", root=root)
        assert r.code == 1 and "no journal file" in r.err, r
        assert r.out == "replayed by jmirrord: 1 conversations, 1 events, 0 bad lines\n", r
        r = run_cli("replay", "c1", root=root)
        assert r.code == 0 and r.err == "", r


def test_ingest_summaries(tmp):
    root = os.path.join(tmp, "root")
    write(root, "c1", conversation("c1", 3))
    write(root, "c2", conversation("c2", 2))
    with open(os.path.join(root, "journal", "README"), "w") as f:
        f.write("not a journal\n")
    r = run_cli("ingest", "--json", root=root)
    assert r.code == 0, r
    out = json.loads(r.out)
    assert {"files", "unchanged", "ingested", "replayed", "removed", "events",
            "bad_lines", "ignored_files", "seconds"} <= set(out), out
    assert (out["files"], out["unchanged"], out["ingested"], out["ignored_files"]) == (2, 0, 2, 1)
    n_events = sum(1 for c in ("c1", "c2") for l in open(jfile(root, c)) if '"ts"' in l)
    assert out["events"] == n_events and out["bad_lines"] == 0, out
    r = run_cli("ingest", root=root)
    assert r.code == 0, r
    assert r.out == "ingested 0 of 2 files (2 unchanged): 0 events, 0 bad lines; 0 replayed, 0 removed\n", r
    write(root, "c1", lines(ev("message", 999, id="z", role="user", content="z"), "{bad"), "ab")
    r = run_cli("ingest", "c1", "--json", root=root)
    out = json.loads(r.out)
    assert (out["files"], out["ingested"], out["events"], out["bad_lines"]) == (1, 1, 1, 1), out
    os.unlink(jfile(root, "c2"))
    r = run_cli("ingest", root=root)
    assert r.code == 0 and r.out.endswith("0 replayed, 1 removed\n"), r
    assert_clean(root, tmp, 1)


def test_verify_json_shape(tmp):
    root = os.path.join(tmp, "root")
    corpus(root)
    code, out, by = verify_json(root)
    assert code == 0, out
    assert {"conversations", "checked", "ok", "behind", "drift"} <= set(out), out
    assert (out["checked"], out["ok"]) == (3, 3), out
    for item in out["conversations"]:
        assert {"conversation", "state", "missing", "extra", "changed",
                "mirror_offset", "file_offset", "detail"} <= set(item), item
        assert item["state"] == "ok" and item["detail"] == "", item
        assert item["mirror_offset"] == item["file_offset"] == os.path.getsize(
            jfile(root, item["conversation"])), item
    # Text: nothing but the summary when all is well; a line per id when
    # ids are given.
    r = run_cli("verify", root=root)
    assert r.out == "verified 3 conversations: 3 ok, 0 behind, 0 drift\n", r
    r = run_cli("verify", "beta", root=root)
    assert r.out == "ok     beta\nverified 1 conversation: 1 ok, 0 behind, 0 drift\n", r
    r = run_cli("verify", "--verbose", root=root)
    assert len(r.out.splitlines()) == 4, r


# --------------------------------------------------------------------------
# Bad lines.

BAD = [  # (line, reason) of every category but too_long (no CLI flag for it)
    ('{"type":"message","id":"m\xff","role":"user","content":"x","ts":"%s"}', "invalid_utf8"),
    ('{"type":"message",', "invalid_json"),
    ('["not", "an", "object"]', "not_object"),
    ('{"type":"message.deleted","id":"m","id":"n","ts":"%s"}', "duplicate_key"),
    ('{"type":"message.deleted","id":"m","v":2,"ts":"%s"}', "unsupported_version"),
    ('{"type":"message.deleted","id":"m","conversation_id":"other","ts":"%s"}',
     "conversation_mismatch"),
    ('{"type":"message.edited","id":"m","ts":"%s"}', "missing_member"),
    ('{"type":"message.deleted","id":"m","ts":"2026-13-01T00:00:00Z"}', "bad_ts"),
    ('{"type":"message","id":"m","role":"robot","content":"x","ts":"%s"}', "wrong_type"),
]


def bad_journal():
    """Good and bad lines alternating (one CRLF, one blank); returns the bytes
    and [(line, offset, reason, id of the next good line)]."""
    data = b""
    expect = []
    line = 0
    for i, (tmpl, reason) in enumerate(BAD):
        good = ev("message", i, id="g%d" % i, role="user", content="before %d" % i)
        data += good.encode() + (b"\r\n" if i == 3 else b"\n")
        line += 1
        if i == 5:
            data += b"   \t\n"
            line += 1
        bad = (tmpl % ts(i) if "%s" in tmpl else tmpl).encode("utf-8", "surrogateescape")
        bad = bad.replace("\xff".encode(), b"\xff")
        line += 1
        expect.append((line, len(data), reason, "g%d" % (i + 1)))
        data += bad + b"\n"
    data += ev("message", 60, id="g%d" % len(BAD), role="user", content="last").encode() + b"\n"
    return data, expect


def test_errors_lists_bad_lines(tmp):
    root = os.path.join(tmp, "root")
    data, expect = bad_journal()
    write(root, "c1", data)
    write(root, "c0", lines(ev("message", 1, id="m", role="user", content="fine"), "{oops"))
    r = run_cli("ingest", root=root)
    assert r.code == 0, r
    assert ", %d bad lines;" % (len(BAD) + 1) in r.out, r
    rows = query(db_of(root), "SELECT line, byte_offset, reason FROM bad_lines WHERE"
                              " conversation_id = 'c1' ORDER BY line")
    assert rows == [(l, o, reason) for l, o, reason, _ in expect], rows
    # The line after every bad line is mirrored, with its line number as seq.
    for l, o, reason, nxt in expect:
        assert query(db_of(root), "SELECT seq FROM messages WHERE conversation_id = 'c1'"
                                  " AND id = ?", (nxt,)) == [(l + 1,)], (nxt, l)
    r = run_cli("errors", root=root)
    assert r.code == 0 and r.err == "", r
    out = r.out.splitlines()
    assert len(out) == len(BAD) + 1, out
    assert re.match(r"^c0:2 \(byte \d+\): invalid_json: .+", out[0]), out
    for text, (l, o, reason, _) in zip(out[1:], expect):
        assert text.startswith("c1:%d (byte %d): %s: " % (l, o, reason)), (text, l, o)
        assert len(text) > len("c1:%d (byte %d): %s: " % (l, o, reason)) + 5, text
    r = run_cli("errors", "c1", "--json", root=root)
    assert r.code == 0, r
    objs = [json.loads(x) for x in r.out.splitlines()]
    assert [(o["conversation"], o["line"], o["offset"], o["reason"]) for o in objs] == [
        ("c1", l, o, reason) for l, o, reason, _ in expect], objs
    assert all({"conversation", "line", "offset", "reason", "message"} <= set(o) and o["message"]
               for o in objs), objs
    # A conversation without bad lines.
    write(root, "c2", lines(ev("message", 1, id="m", role="user", content="x")))
    assert run_cli("ingest", root=root).code == 0
    r = run_cli("errors", "c2", root=root)
    assert r.code == 0 and r.out == "" and r.err == "no bad lines recorded\n", r
    r = run_cli("errors", "c2", "--json", root=root)
    assert r.code == 0 and r.out == "" and r.err == "", r
    # A bad line appended since the last ingest is listed too: errors
    # answers for the journal as it is, as reads do.
    with open(os.path.join(root, "journal", "c2.jsonl"), "ab") as f:
        f.write(b"garbage\n")
    r = run_cli("errors", "c2", root=root)
    assert r.code == 0 and re.match(r"^c2:2 \(byte \d+\): invalid_json: ", r.out), r
    # An id with no journal file is an error, not "no bad lines".
    r = run_cli("errors", "nosuch", root=root)
    assert r.code == 1 and r.out == "" and "no conversation 'nosuch'" in r.err, r
    assert len(r.err.splitlines()) == 1, r
    # The same records after a replay.
    before = dump(db_of(root))
    assert run_cli("replay", "--all", root=root).code == 0
    assert dump(db_of(root)) == before


def test_bad_lines_appended_with_cli(tmp):
    """Lines `jmirror append` refuses never reach the journal; a torn tail
    it repairs becomes a bad line of its own, recorded where it is."""
    root = os.path.join(tmp, "root")
    write(root, "c1", lines(ev("message", 1, id="m1", role="user", content="a"))
          + '{"type":"message","id":"torn"')
    size = os.path.getsize(jfile(root, "c1"))
    r = run_cli("append", "c1", ev("message", 2, id="m2", role="user", content="b"), root=root)
    assert r.code == 0, r
    r = run_cli("append", "c1", '{"type":"message"}', root=root)
    assert r.code == 1, r
    assert run_cli("ingest", root=root).code == 0
    first = len(lines(ev("message", 1, id="m1", role="user", content="a")))
    assert query(db_of(root), "SELECT line, byte_offset, reason FROM bad_lines") == [
        (2, first, "invalid_json")]
    assert query(db_of(root), "SELECT id, seq FROM messages ORDER BY seq") == [
        ("m1", 1), ("m2", 3)]
    assert size + 1 < os.path.getsize(jfile(root, "c1"))


# --------------------------------------------------------------------------
# Refusals and usage.

def test_bad_ids_and_usage(tmp):
    root = os.path.join(tmp, "root")
    corpus(root, sizes=(("c1", 2),))
    before = dump(db_of(root))
    for cid in ["..", "a/b", "Abc", "x" * 129, ".hidden", "a b", "é", ""]:
        for args in (["replay", cid], ["verify", cid], ["errors", cid], ["ingest", cid],
                     ["verify", "--repair", cid], ["replay", "c1", cid]):
            r = run_cli(*args, root=root)
            assert r.code == 1, (args, r)
            assert "invalid conversation id" in r.err, (args, r)
            assert r.out == "", (args, r)
    for args in (["replay"], ["replay", "--all", "c1"], ["errors", "c1", "c2"],
                 ["replay", "--all", "--threads", "x"], ["replay", "--all", "--bogus"],
                 ["verify", "--threads"], ["verify", "--repair=yes"], ["ingest", "--nope"],
                 ["replay", "--all", "--threads=-1"]):
        r = run_cli(*args, root=root)
        assert r.code == 2, (args, r)
        assert "jmirror %s: " % args[0] in r.err and "(see 'jmirror help %s')" % args[0] in r.err, (
            args, r)
    for cmd in ("replay", "verify", "errors", "ingest"):
        r = run_cli("help", cmd)
        assert r.code == 0 and r.out.startswith("usage: jmirror"), r
        r = run_cli(cmd, "--help", root=root)
        assert r.code == 0 and r.out.startswith("usage: jmirror"), r
    # Nothing changed, nothing created outside journal/ and mirror/.
    assert dump(db_of(root)) == before
    assert sorted(os.listdir(root)) == ["journal", "mirror"], os.listdir(root)
    assert sorted(os.listdir(os.path.join(root, "journal"))) == ["c1.jsonl"]


def test_lock_held(tmp):
    """While another writer holds the mirror's lock, writing commands say who
    has it and fail; verify (read-only) still works."""
    root = os.path.join(tmp, "root")
    corpus(root, sizes=(("c1", 2),))
    lock = db_of(root) + ".lock"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.ftruncate(fd, 0); os.write(fd, b'%d tester' % os.getpid())\n"
         "print('ready', flush=True)\n"
         "sys.stdin.read()\n", lock],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"ready\n"
        for args in (["replay", "--all"], ["replay", "c1"], ["ingest"]):
            r = run_cli(*args, root=root)
            assert r.code == 1, (args, r)
            assert str(holder.pid) in r.err, (args, r)
        r = run_cli("verify", root=root)
        assert r.code == 0, r
    finally:
        holder.kill()
        holder.wait()
    assert run_cli("replay", "--all", root=root).code == 0


if __name__ == "__main__":
    run(globals())
