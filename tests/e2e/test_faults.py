"""Fault tests: the disk says no, and nothing acknowledged is lost, nothing
unacknowledged is left behind, every failure is one clear line, and
everything works again once the fault is gone.

  - the writer (`jmirror append`, one event and bulk): ENOSPC, EIO and short
    writes injected by the LD_PRELOAD shim (tests/shim/powerloss.c), a real
    short write past RLIMIT_FSIZE, a really full file system (a small tmpfs,
    when this machine lets the test mount one);
  - an fsync that fails: under `always` the append is not acknowledged and
    the event is not in the file; under `batch` the CLI fails but the event
    stays (it was written before the sync: the weaker promise);
  - jmirrord with writes to mirror/ failing (ENOSPC, then EIO) for a while:
    one error line per attempt, retries with back-off, keeps running,
    converges once the fault is lifted; an unreadable journal file does not
    make it retry (and log) faster while other files are written;
  - `jmirror backup` with EIO (and a failing fsync) into DEST: the previous
    backup stays whole (ENOSPC and RLIMIT_FSIZE are in test_backup.py);
  - permission denied (the commands run as nobody, via setpriv or runuser),
    missing directories, a read-only root, a root whose path has spaces and
    non-ASCII characters.

The SQLite side of mirror faults (xWrite/xSync failing at every point of
an ingest, a replay, a rebuild) is tests/unit/test_vfs_faults.c.  Waiting on
the daemon is a poll with a deadline; the fault windows are real time.
"""
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from crashkit import (assert_converges, fault_log_lines, have_shim, ids_in,  # noqa: E402
                      integrity, journal_path, message, mirror_ids, note, parse_journal,
                      query, set_fault, shim_env, skip)
from harness import (JMIRROR, JMIRRORD, Daemon, Result, control, run, run_cli,  # noqa: E402
                     wait_rows, wait_until, wait_verify_clean)


def one_error(r, *needles, prog="jmirror"):
    """Exactly one line on stderr, `prog: ...`, naming every needle."""
    lines = [l for l in r.err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith(prog + ": "), r
    for n in needles:
        assert n in lines[0], (n, r)
    return lines[0]


def read(path):
    with open(path, "rb") as f:
        return f.read()


def seeded_root(tmp, name="root", n=5, cid="c1"):
    root = os.path.join(tmp, name)
    r = run_cli("append", cid, "-", root=root,
                stdin="".join(message("m%d" % i, "seed %d ü" % i, i) + "\n" for i in range(n)))
    assert r.code == 0, r
    return root


# --------------------------------------------------------------------------
# The writer.

def test_writer_write_faults(tmp):
    """ENOSPC, EIO and a short write followed by ENOSPC, injected into the
    append of one event (with and without a torn tail before it, in each
    durability mode): exit 1, one line naming the file and the cause, the
    file byte for byte as before (a torn tail stays torn: those bytes are
    not the writer's), and the next append works."""
    if not have_shim():
        return skip("the LD_PRELOAD shim is Linux only (JM_SHIM unset)")
    causes = {"enospc": "No space left on device", "eio": "Input/output error",
              "short": "No space left on device"}
    n = 0
    for word, cause in causes.items():
        for torn in (False, True):
            for mode in ("always", "batch", "none"):
                n += 1
                root = seeded_root(tmp, "r%d" % n)
                path = journal_path(root, "c1")
                if torn:
                    with open(path, "ab") as f:
                        f.write(b'{"type":"message","id":"torn')
                ctl, log = os.path.join(tmp, "ctl%d" % n), os.path.join(tmp, "log%d" % n)
                set_fault(ctl, word)
                env = shim_env(fault_dir=os.path.join(root, "journal"), ctl=ctl, log=log)
                before = read(path)
                r = run_cli("append", "c1", message("x", "refused by the disk"), "--sync", mode,
                            root=root, env=env)
                assert r.code == 1, (word, torn, mode, r)
                one_error(r, "cannot append to '%s'" % path, cause)
                assert read(path) == before, (word, torn, mode)
                assert fault_log_lines(log), "the fault was never reached"
                set_fault(ctl, "ok")
                r = run_cli("append", "c1", message("y", "accepted"), "--sync", mode,
                            root=root, env=env)
                assert r.code == 0 and r.err == "", r
                events, bad, tail = parse_journal(path)
                assert [e["id"] for e in events] == ["m%d" % i for i in range(5)] + ["y"]
                assert len(bad) == torn and tail == b""
                assert_converges(root, what=(word, torn, mode))
    note("%d injected write faults: each refused cleanly, file unchanged, next append fine" % n)


def test_writer_bulk_fault_midway(tmp):
    """A bulk import whose disk fills after 7 events (and one whose 8th
    write comes up short): the 7 are there and intact, nothing of the 8th,
    the summary says 7, one error line, exit 1."""
    if not have_shim():
        return skip("the LD_PRELOAD shim is Linux only (JM_SHIM unset)")
    for word in ("enospc@7", "short@7"):
        root = seeded_root(tmp, "r-" + word.replace("@", "-"))
        path = journal_path(root, "c1")
        ctl = os.path.join(tmp, "ctl")
        set_fault(ctl, word)
        env = shim_env(fault_dir=os.path.join(root, "journal"), ctl=ctl)
        before = read(path)
        data = "".join(message("b%d" % i, "bulk %d" % i * 50, i) + "\n" for i in range(20))
        r = run_cli("append", "c1", "-", "--sync", "always", root=root, env=env, stdin=data)
        assert r.code == 1 and "appended 7 events to 'c1'" in r.out, (word, r)
        one_error(r, "cannot append to '%s'" % path, "No space left on device")
        after = read(path)
        assert after.startswith(before) and after.endswith(b"\n")
        assert ids_in(path) == ["m%d" % i for i in range(5)] + ["b%d" % i for i in range(7)]
        set_fault(ctl, "ok")
        assert run_cli("append", "c1", message("z", "after"), root=root, env=env).code == 0
        assert_converges(root, what=word)


def test_writer_rlimit_fsize(tmp):
    """A real short write: RLIMIT_FSIZE lets the kernel write the event only
    up to the limit, then EFBIG (SIGXFSZ ignored, as a shell may leave it):
    the part written is taken back, one clear error, exit 1."""
    root = seeded_root(tmp)
    path = journal_path(root, "c1")
    before = read(path)
    limit = len(before) + 40

    def limited():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    p = subprocess.run([JMIRROR, "--root", root, "append", "c1",
                        message("big", "x" * 300), "--sync", "always"],
                       capture_output=True, preexec_fn=limited)
    r = Result(p.returncode, p.stdout.decode(), p.stderr.decode())
    assert r.code == 1, r
    one_error(r, "cannot append to '%s'" % path, "File too large")
    assert read(path) == before
    assert run_cli("append", "c1", message("big", "x" * 300), root=root).code == 0
    assert_converges(root)


@contextlib.contextmanager
def tmpfs(where, size):
    """A small tmpfs of our own (a real full disk, a real read-only file
    system); None when this machine does not let us mount one."""
    os.makedirs(where)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs", where],
                       capture_output=True)
    if p.returncode != 0:
        yield None
        return
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", where], capture_output=True)


def test_writer_real_disk_full(tmp):
    """A real ENOSPC: a 1 MiB tmpfs filled up.  The append that does not
    fit is refused (the kernel may have written part of it: taken back),
    the file is as before; after room is made, appends work."""
    with tmpfs(os.path.join(tmp, "mnt"), "1m") as mnt:
        if mnt is None:
            return skip("cannot mount a tmpfs here (needs root in a VM, not a container)")
        root = seeded_root(mnt)
        path = journal_path(root, "c1")
        fd = os.open(os.path.join(mnt, "filler"), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"\0" * 4096) > 0:
                pass
        except OSError:
            pass
        finally:
            os.close(fd)
        before = read(path)
        r = run_cli("append", "c1", message("big", "y" * 20000), "--sync", "always", root=root)
        assert r.code == 1, r
        one_error(r, "cannot append to '%s'" % path, "No space left on device")
        assert read(path) == before
        os.unlink(os.path.join(mnt, "filler"))
        assert run_cli("append", "c1", message("big", "y" * 20000), root=root).code == 0
        assert ids_in(path)[-1] == "big"


def test_fsync_failure(tmp):
    """fsync fails (EIO, after the data reached the page cache):
      always  not acknowledged: exit 1, and the event is not in the file
              (nobody will read an event its writer was told failed);
      batch   the CLI exits 1 too (its final sync failed), but the event
              was written and acknowledged to the library before that
              sync, so it stays in the file: the weaker promise;
      a new conversation whose directory cannot be synced: refused, no
              event in the file."""
    if not have_shim():
        return skip("the LD_PRELOAD shim is Linux only (JM_SHIM unset)")
    root = seeded_root(tmp)
    path = journal_path(root, "c1")
    ctl, log = os.path.join(tmp, "ctl"), os.path.join(tmp, "log")
    env = shim_env(fault_dir=os.path.join(root, "journal"), ctl=ctl, log=log)
    set_fault(ctl, "fsync-eio")
    before = read(path)
    r = run_cli("append", "c1", message("a", "always"), "--sync", "always", root=root, env=env)
    assert r.code == 1, r
    one_error(r, "cannot sync '%s'" % path, "Input/output error")
    assert read(path) == before, "an append whose fsync failed was left in the file"
    r = run_cli("append", "c1", message("b", "batch"), "--sync", "batch", root=root, env=env)
    assert r.code == 1, r
    one_error(r, "cannot sync '%s'" % path, "Input/output error")
    assert ids_in(path)[-1] == "b"
    r = run_cli("append", "c9", message("n", "new file"), "--sync", "always", root=root, env=env)
    assert r.code == 1, r
    one_error(r, "Input/output error")
    assert ids_in(journal_path(root, "c9")) == []
    assert {l[1] for l in fault_log_lines(log)} == {"fsync"}
    set_fault(ctl, "ok")
    r = run_cli("append", "c1", message("c", "fine"), "--sync", "always", root=root, env=env)
    assert r.code == 0, r
    assert ids_in(path)[-2:] == ["b", "c"]
    assert_converges(root)


# --------------------------------------------------------------------------
# jmirrord.

def error_lines(d, since=0):
    return [l for l in d.log_text().splitlines()[since:] if " error: " in l]


def test_daemon_mirror_write_faults(tmp):
    """jmirrord with every write to mirror/ failing, first ENOSPC, then EIO,
    then short writes (half a page or frame written, then the disk full:
    torn WAL frames a later commit must not take for whole), each for a
    few seconds while events arrive: it keeps running and
    answering, logs one clear line per failed attempt (no more often than
    the back-off allows), retries, and converges once the fault is lifted."""
    if not have_shim():
        return skip("the LD_PRELOAD shim is Linux only (JM_SHIM unset)")
    root = os.path.join(tmp, "root")
    ctl, flog = os.path.join(tmp, "ctl"), os.path.join(tmp, "faults")
    set_fault(ctl, "ok")
    env = shim_env(fault_dir=os.path.join(root, "mirror"), ctl=ctl, log=flog)
    with Daemon(root, "-v", env=env) as d:
        r = run_cli("append", "c1", "-", root=root,
                    stdin="".join(message("a%d" % i, "before") + "\n" for i in range(10)))
        assert r.code == 0, r
        wait_rows(root, 10)
        total = 10
        for word, cause in (("enospc", r"database or disk is full|No space left"),
                            ("eio", r"disk I/O error"),
                            ("short", r"database or disk is full|No space left")):
            seen = len(d.log_text().splitlines())
            set_fault(ctl, word)
            t0 = time.monotonic()
            # Events keep coming while the disk refuses: by hand (the
            # format allows it; `jmirror append` would wait for the daemon).
            for k in range(6):
                with open(journal_path(root, "c%d" % (k % 3)), "ab") as f:
                    f.write((message("%s%d" % (word, k), "during") + "\n").encode())
                total += 1
                st = wait_until(lambda: (lambda s: s if s.get("last_error") else None)(
                    control(root, {"cmd": "status"})), 30, "the daemon to notice")
                time.sleep(0.5)  # the fault lasts a while: real time is the point
            assert d.alive(), d.log_text()
            assert re.search(cause, st["last_error"]), st
            lasted = time.monotonic() - t0
            errors = error_lines(d, seen)
            assert errors, d.log_text()
            for l in errors:
                assert re.search(cause, l) and "retrying in" in l, l
            # 0.5 s doubling: at most one line per back-off step, never a flood.
            assert len(errors) <= 2 + int(lasted).bit_length() + 1, (len(errors), lasted, errors)
            attempts = len(fault_log_lines(flog))
            set_fault(ctl, "ok")
            wait_rows(root, total, timeout=90)
            note("%s for %.1f s: %d error lines, %d failed writes by the shim, then converged"
                 % (word, lasted, len(errors), attempts))
            os.unlink(flog)
        wait_verify_clean(root, 30)
        assert integrity(root) == [("ok",)]
    assert query(root, "SELECT count(*) FROM messages") == [(total,)]


def nobody():
    """The command prefix that drops root to nobody, or None."""
    if shutil.which("setpriv"):
        return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    if shutil.which("runuser"):
        return ["runuser", "-u", "nobody", "--"]
    return None


def run_as(prefix, *args, root=None, binary=JMIRROR, timeout=120):
    cmd = prefix + [binary] + (["--root", root] if root else []) + [str(a) for a in args]
    e = dict(os.environ)
    e.pop("JMIRROR_ROOT", None)
    p = subprocess.run(cmd, capture_output=True, env=e, timeout=timeout)
    return Result(p.returncode, p.stdout.decode("utf-8", "replace"),
                  p.stderr.decode("utf-8", "replace"))


def chown_tree(path, uid):
    for d, dirs, files in os.walk(path):
        os.chown(d, uid, uid)
        for f in files:
            os.chown(os.path.join(d, f), uid, uid)


def open_tmp_for_nobody(tmp):
    os.chmod(tmp, 0o755)


def test_daemon_unreadable_file(tmp):
    """jmirrord (as nobody) with one journal file it may not read while
    another conversation is written all the time: the unreadable one is
    reported (permission denied, never taken as deleted: its rows stay),
    retried with a back-off that grows although the other file ingests
    fine, and picked up once it is readable again."""
    prefix = nobody()
    if prefix is None or os.getuid() != 0:
        return skip("needs root and setpriv or runuser to run as nobody")
    open_tmp_for_nobody(tmp)
    root = seeded_root(tmp, n=3, cid="locked")
    assert run_cli("append", "busy", message("b0", "x"), root=root).code == 0
    assert run_cli("ingest", root=root).code == 0
    chown_tree(root, 65534)
    path = journal_path(root, "locked")
    with open(path, "ab") as f:
        f.write((message("new", "appended while unreadable") + "\n").encode())
    os.chown(path, 0, 0)
    os.chmod(path, 0o600)
    log = os.path.join(tmp, "d.log")
    d = Daemon(root, "-v", log=log)
    # Daemon.spawn runs the daemon itself: start it behind the prefix here.
    e = dict(os.environ)
    e.pop("JMIRROR_ROOT", None)
    with open(log, "ab") as f:
        d.proc = subprocess.Popen(prefix + [JMIRRORD, "--root", root, "-v"],
                                  stdin=subprocess.DEVNULL, stdout=f, stderr=f, env=e)
    t_start = time.monotonic()
    try:
        d.wait_ready()
        # The other conversation is written every 100 ms for 4 s.
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 4:
            with open(journal_path(root, "busy"), "ab") as f:
                f.write((message("b%d" % (n + 1), "busy") + "\n").encode())
            n += 1
            time.sleep(0.1)  # the writer's pace: real time is the point
        wait_rows(root, n + 1, conv="busy", timeout=30)
        assert mirror_ids(root, "locked") == ["m0", "m1", "m2"], "rows of an unreadable file lost"
        errs = [l for l in d.log_text().splitlines() if " error: " in l]
        elapsed = time.monotonic() - t_start
        assert errs and all("Permission denied" in l and path in l for l in errs), errs
        # Attempts at 0, 0.5, 1.5, 3.5, 7.5 s...: not one every 0.5 s.
        allowed = sum(1 for k in range(20) if 0.5 * (2 ** k - 1) <= elapsed)
        assert len(errs) <= allowed, ("the back-off was reset by the other file's ingests",
                                      elapsed, errs)
        os.chown(path, 65534, 65534)
        os.kill(d.pid, signal.SIGHUP)
        wait_rows(root, 4, conv="locked", timeout=90)
        note("%d events ingested into 'busy' in 4 s; the unreadable file logged %d errors, "
             "then was ingested once readable" % (n, len(errs)))
        code, _ = d.stop()
        assert code == 0, d.log_text()
    finally:
        d.kill()


# --------------------------------------------------------------------------
# jmirror backup.

def test_backup_eio(tmp):
    """EIO into DEST at several points of an incremental backup (and a
    failing fsync there): exit 1 with one line naming the file, the
    previous backup still checks out, and the next run completes it."""
    if not have_shim():
        return skip("the LD_PRELOAD shim is Linux only (JM_SHIM unset)")
    root = os.path.join(tmp, "root")
    for c in range(6):
        assert run_cli("append", "c%d" % c, "-", root=root, stdin="".join(
            message("m%d" % i, "text %d " % i * 300) + "\n" for i in range(50))).code == 0
    dest = os.path.join(tmp, "dest")
    assert run_cli("backup", dest, root=root).code == 0
    ctl, log = os.path.join(tmp, "ctl"), os.path.join(tmp, "log")
    env = shim_env(fault_dir=dest, ctl=ctl, log=log)
    failures = 0
    for rnd, word in enumerate(["eio", "eio@1", "eio@3", "eio@5", "fsync-eio", "fsync-eio@2",
                                "fsync-eio@6", "short@2"]):
        for c in range(6):
            assert run_cli("append", "c%d" % c, message("r%d" % rnd, "more " * 500),
                           root=root).code == 0
        set_fault(ctl, word)
        manifest = read(os.path.join(dest, "MANIFEST.json"))
        r = run_cli("backup", dest, root=root, env=env)
        set_fault(ctl, "ok")
        if r.code == 0:  # the fault point was past the last write of the run
            assert not fault_log_lines(log), (word, r)
            continue
        failures += 1
        assert r.code == 1, r
        one_error(r, dest, "Input/output error" if "eio" in word else "No space left")
        assert read(os.path.join(dest, "MANIFEST.json")) == manifest, word
        chk = run_cli("backup", "--check", dest, "--json", root=root)
        j = json.loads(chk.out)
        assert chk.code == 0 and j["files_bad"] == 0, (word, chk)
        if os.path.exists(log):
            os.unlink(log)
        r = run_cli("backup", dest, root=root, env=env)
        assert r.code == 0, (word, r)
        chk = run_cli("backup", "--check", dest, root=root)
        assert chk.code == 0 and " 0 bad" in chk.out, chk
    note("%d of 8 faulted backups failed cleanly (the others' fault point was past their "
         "last write)" % failures)
    assert failures >= 6


# --------------------------------------------------------------------------
# Permissions, missing directories, read-only roots, awkward paths.

def test_permission_denied(tmp):
    """As nobody: a root it may not write, a read-only journal/ and file,
    an unreadable journal file, a mirror it may not write, a backup
    destination it may not write.  Each command fails with one line naming
    the path and 'Permission denied' (or succeeds where it only needs to
    read), nothing is half-written, and the journal is untouched."""
    prefix = nobody()
    if prefix is None or os.getuid() != 0:
        return skip("needs root and setpriv or runuser to run as nobody")
    open_tmp_for_nobody(tmp)
    ev = message("x", "as nobody")
    # A root owned by root: nothing can be created in it.
    root = os.path.join(tmp, "rootowned")
    os.makedirs(root, mode=0o755)
    r = run_as(prefix, "append", "c1", ev, root=root)
    assert r.code == 1, r
    one_error(r, os.path.join(root, "journal"), "Permission denied")
    assert os.listdir(root) == []
    for cmd in (["ingest"], ["replay", "--all"], ["verify"]):
        r = run_as(prefix, *cmd, root=root)
        assert r.code == 1, (cmd, r)
        one_error(r, os.path.join(root, "mirror"), "Permission denied")
    r = run_as(prefix, "--help")
    assert r.code == 0
    # nobody's own root, then parts of it taken away.
    root = seeded_root(tmp, "mine")
    assert run_cli("append", "c2", message("y", "other"), root=root).code == 0
    assert run_cli("ingest", root=root).code == 0
    chown_tree(root, 65534)
    jdir = os.path.join(root, "journal")
    os.chmod(jdir, 0o500)
    r = run_as(prefix, "append", "c3", ev, root=root)
    assert r.code == 1, r
    one_error(r, journal_path(root, "c3"), "Permission denied")
    r = run_as(prefix, "append", "c1", ev, root=root)  # an existing file: fine
    assert r.code == 0, r
    os.chmod(jdir, 0o700)
    os.chmod(journal_path(root, "c2"), 0o400)
    before = read(journal_path(root, "c2"))
    r = run_as(prefix, "append", "c2", ev, root=root)
    assert r.code == 1, r
    one_error(r, journal_path(root, "c2"), "Permission denied")
    assert read(journal_path(root, "c2")) == before
    # A file it may not read: ingest fails on it, its rows stay.
    os.chown(journal_path(root, "c2"), 0, 0)
    os.chmod(journal_path(root, "c2"), 0o600)
    with open(journal_path(root, "c2"), "ab") as f:
        f.write((message("z", "unreadable") + "\n").encode())
    r = run_as(prefix, "ingest", root=root)
    assert r.code == 1, r
    one_error(r, journal_path(root, "c2"), "Permission denied")
    assert mirror_ids(root, "c2") == ["y"], "the rows of an unreadable file were removed"
    assert sorted(mirror_ids(root, "c1")) == sorted(["m%d" % i for i in range(5)] + ["x"])
    r = run_as(prefix, "verify", root=root)
    assert r.code == 1 and "Permission denied" in r.out + r.err, r
    os.chown(journal_path(root, "c2"), 65534, 65534)
    # A mirror it may not write: reads say why, writes fail, nothing breaks.
    mdir = os.path.join(root, "mirror")
    chown_tree(mdir, 0)
    os.chmod(mdir, 0o755)
    for name in os.listdir(mdir):
        os.chmod(os.path.join(mdir, name), 0o644)
    for cmd in (["ingest"], ["replay", "--all"], ["verify", "--repair"], ["verify"]):
        r = run_as(prefix, *cmd, root=root)
        if cmd == ["verify"] and r.code == 0:
            continue  # it only reads: fine when SQLite can read it read-only
        assert r.code == 1, (cmd, r)
        line = one_error(r, os.path.join(mdir, "mirror.db"))
        assert "corrupt" not in line, ("a mirror it cannot write is not corrupt", cmd, line)
    # With a -wal and -shm left by a process that owned it, reading needs
    # write access too: verify must say it cannot read it, not "corrupt".
    for name in ("mirror.db-wal", "mirror.db-shm"):
        with open(os.path.join(mdir, name), "wb") as f:
            f.write(b"")
        os.chmod(os.path.join(mdir, name), 0o644)
    for cmd in (["verify"], ["errors"], ["status"]):
        r = run_as(prefix, *cmd, root=root)
        if r.code == 0:
            continue
        line = one_error(r, os.path.join(mdir, "mirror.db"))
        assert "corrupt" not in line, ("a mirror it cannot write is not corrupt", cmd, line)
    r = run_as(prefix, root=root, binary=JMIRRORD)
    assert r.code == 1, r
    one_error(r, os.path.join(mdir, "mirror.db"), prog="jmirrord")
    chown_tree(mdir, 65534)
    assert_converges(root)
    # A backup destination it may not write.
    dest = os.path.join(tmp, "dest")
    os.makedirs(dest, mode=0o755)
    r = run_as(prefix, "backup", dest, root=root)
    assert r.code == 1, r
    one_error(r, dest, "Permission denied")
    assert os.listdir(dest) == []


def test_missing_directories(tmp):
    """Every command on a root that does not exist, or that lost journal/
    or mirror/: no crash, exit 0 or 1, at most one error line, nothing
    invented (only `append` creates journal/; a missing journal/ never
    removes rows)."""
    cmds = [["ingest"], ["verify"], ["verify", "--repair"], ["replay", "--all"],
            ["replay", "c1"], ["errors"], ["status"], ["ls"], ["show", "c1"],
            ["search", "x"], ["backup", os.path.join(tmp, "dest")]]
    for cmd in cmds:
        root = os.path.join(tmp, "none", "root")
        r = run_cli(*cmd, root=root)
        assert r.code in (0, 1), (cmd, r)
        assert len([l for l in r.err.splitlines() if l.strip()]) <= 1, (cmd, r)
        assert not os.path.exists(os.path.join(root, "journal")), cmd
        shutil.rmtree(os.path.join(tmp, "none"), ignore_errors=True)
        shutil.rmtree(os.path.join(tmp, "dest"), ignore_errors=True)
    # journal/ gone under a populated mirror (a disk not mounted, a restore
    # in progress): the rows stay, whatever is run; `replay --all` refuses
    # to rebuild the mirror from nothing.
    root = seeded_root(tmp)
    assert run_cli("ingest", root=root).code == 0
    shutil.rmtree(os.path.join(root, "journal"))
    for cmd in cmds:
        r = run_cli(*cmd, root=root)
        assert r.code in (0, 1), (cmd, r)
        assert len([l for l in r.err.splitlines() if l.strip()]) <= 1, (cmd, r)
        assert not os.path.exists(os.path.join(root, "journal")), cmd
        if cmd == ["replay", "--all"]:
            assert r.code == 1 and "is missing" in r.err, r
        assert len(mirror_ids(root, "c1")) == 5, ("rows", cmd)
        shutil.rmtree(os.path.join(tmp, "dest"), ignore_errors=True)
    # mirror/ gone: recreated by the next ingest.
    root = seeded_root(tmp, "r2")
    assert run_cli("ingest", root=root).code == 0
    shutil.rmtree(os.path.join(root, "mirror"))
    assert_converges(root)
    assert len(mirror_ids(root, "c1")) == 5


def test_read_only_root(tmp):
    """A root on a read-only file system (a mounted snapshot): appends and
    every mirror write fail with one line naming the path and 'Read-only
    file system', verify does not call the mirror corrupt, jmirrord exits 1
    with one line, and a backup of it works (it only reads the root)."""
    with tmpfs(os.path.join(tmp, "mnt"), "8m") as mnt:
        if mnt is None:
            return skip("cannot mount a tmpfs here (needs root in a VM, not a container)")
        root = seeded_root(mnt)
        assert run_cli("ingest", root=root).code == 0
        before = read(journal_path(root, "c1"))
        p = subprocess.run(["mount", "-o", "remount,ro", mnt], capture_output=True)
        if p.returncode != 0:
            return skip("cannot remount the tmpfs read-only")
        r = run_cli("append", "c1", message("x", "no"), root=root)
        assert r.code == 1, r
        one_error(r, journal_path(root, "c1"), "Read-only file system")
        for cmd in (["ingest"], ["replay", "--all"], ["verify", "--repair"]):
            r = run_cli(*cmd, root=root)
            assert r.code == 1, (cmd, r)
            one_error(r, "Read-only file system")
        for cmd in (["verify"], ["errors"], ["status"]):
            r = run_cli(*cmd, root=root)
            assert r.code == 1, (cmd, r)
            line = one_error(r, os.path.join(root, "mirror", "mirror.db"))
            assert "corrupt" not in line, (cmd, line)
        r = run_cli(root=root, binary=JMIRRORD, timeout=30)
        assert r.code == 1, r
        one_error(r, "Read-only file system", prog="jmirrord")
        dest = os.path.join(tmp, "dest")
        r = run_cli("backup", dest, root=root)
        assert r.code == 0, r
        assert read(os.path.join(dest, "journal", "c1.jsonl")) == before
        assert run_cli("backup", "--check", dest).code == 0
        assert read(journal_path(root, "c1")) == before


def test_awkward_root_path(tmp):
    """A root (and a backup destination) whose path has spaces, quotes and
    non-ASCII characters: append, ingest, replay, verify, errors, status,
    the daemon, backup and its check all work there."""
    root = os.path.join(tmp, "my root 'quoted' ü 한글 😀", "sub dir")
    dest = os.path.join(tmp, "backup dir é ø", "dest")
    r = run_cli("append", "c1", "-", root=root,
                stdin="".join(message("m%d" % i, "ü %d" % i) + "\n" for i in range(5)) + "{bad\n")
    assert r.code == 1 and "appended 5 events" in r.out, r  # the bad line is refused
    with open(journal_path(root, "c1"), "ab") as f:
        f.write(b"{bad line by hand\n")
    for cmd in (["ingest"], ["replay", "c1"], ["replay", "--all"]):
        r = run_cli(*cmd, root=root)
        assert r.code == 0, (cmd, r)
    errs = run_cli("errors", "--json", root=root)
    assert errs.code == 0 and json.loads(errs.out.splitlines()[0])["line"] == 6, errs
    assert run_cli("status", root=root).code == 0
    with Daemon(root) as d:
        assert run_cli("append", "c2", message("d", "via the daemon"), root=root).code == 0
        wait_rows(root, 6)
        st = d.status()
        assert st["root"] == root, st
        wait_verify_clean(root, 30)
    r = run_cli("backup", dest, "--with-mirror", root=root)
    assert r.code == 0, r
    r = run_cli("backup", "--check", dest)
    assert r.code == 0 and " 0 bad" in r.out, r
    assert_converges(root)


if __name__ == "__main__":
    run(globals())
