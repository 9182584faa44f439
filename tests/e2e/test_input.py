"""End-to-end tests of bad input on the real paths: the malformed-JSON corpus
and a line over the real maximum, written into journal files (as a foreign
writer would) and read by `jmirror replay`, `jmirror ingest` and a running
jmirrord, and fed to `jmirror append`.

The corpus is fixtures/malformed/lines.txt, read exactly as
tests/unit/test_event.c:test_fixture_corpus reads it (tab-separated
expected verdict, hex of the line, description; `#` lines and empty lines
skipped).  In a journal file the verdict is the same, except that a line
of only spaces, tabs and CR is blank and skipped silently (docs/journal.md,
"Lines"): the corpus's empty line.
"""
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from harness import (FIXTURES, JMIRROR, Daemon, query, run, run_cli,  # noqa: E402
                     verify, wait_until)

# Under ASan the freed line buffers sit in its quarantine and count as RSS:
# the memory bounds are measured and printed, but only held in a plain build.
SANITIZED = os.environ.get("JM_SANITIZED", "none") not in ("", "none")
CONV = "c1"  # the corpus is written for a file named c1 (the unit test's id)
KNOWN_TYPES = {"conversation.created", "conversation.updated", "conversation.deleted",
               "conversation.restored", "message", "message.delta", "message.end",
               "message.edited", "message.deleted"}


def note(text):
    print("# " + text, flush=True)


def max_line():
    """JM_MAX_LINE_DEFAULT as the header defines it, so that the test
    follows the real constant."""
    hdr = os.path.join(FIXTURES, "..", "include", "jmirror", "reader.h")
    with open(hdr) as f:
        m = re.search(r"#define JM_MAX_LINE_DEFAULT \(\(size_t\)(\d+) \* (\d+) \* (\d+)\)",
                      f.read())
    assert m, "JM_MAX_LINE_DEFAULT not found in " + hdr
    n = int(m.group(1)) * int(m.group(2)) * int(m.group(3))
    assert n == 64 * 1024 * 1024, n  # docs/journal.md says 64 MiB
    return n


def load_corpus():
    """[(expected, bytes, description)] as test_fixture_corpus reads it."""
    out = []
    with open(os.path.join(FIXTURES, "malformed", "lines.txt"), "rb") as f:
        for raw in f.read().split(b"\n"):
            if raw == b"" or raw.startswith(b"#"):
                continue
            want, hexed, desc = raw.decode("ascii").split("\t", 2)
            line = bytes.fromhex(hexed)
            assert b"\n" not in line, "a corpus line with an LF cannot be one journal line: " + desc
            out.append((want, line, desc))
    assert len(out) >= 100, len(out)
    return out


def is_blank(line):
    return all(c in b" \t\r" for c in line)


def file_verdict(want, line):
    """What a journal reader must make of this line: 'blank', 'ok' or a reason."""
    return "blank" if is_blank(line) else want


def ts_norm(s):
    """The writer's normalised ts (docs/journal.md, section 3)."""
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z", s)
    assert m, s
    return "%s.%sZ" % (m.group(1), ((m.group(2) or "") + "000000")[:6])


def event_value(line):
    """A valid line as a JSON value with its ts normalised (the writer
    re-serialises: compare values, not bytes)."""
    v = json.loads(line.decode("utf-8"))
    v["ts"] = ts_norm(v["ts"])
    return v


def jdir(root):
    return os.path.join(root, "journal")


def jfile(root, cid=CONV):
    return os.path.join(jdir(root), cid + ".jsonl")


def db_of(root):
    return os.path.join(root, "mirror", "mirror.db")


def foreign_append(path, data):
    """Append as another program would (docs/journal.md, "Other writers"):
    flock, one write."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def sentinel(i):
    return json.dumps({"type": "message", "ts": "2026-02-01T00:00:%02dZ" % (i % 60),
                       "id": "s%03d" % i, "role": "user", "content": "around %d" % i},
                      separators=(",", ":")).encode()


def corpus_journal(cases):
    """Every corpus line with a valid message before and after it:
    s000, case 0, s001, case 1, ..., sN.  Returns the bytes and, per case,
    (line number, byte offset, file verdict, description)."""
    data = bytearray()
    where = []
    line = 0
    for i, (want, b, desc) in enumerate(cases):
        data += sentinel(i) + b"\n"
        line += 1
        line += 1
        where.append((line, len(data), file_verdict(want, b), desc))
        data += b + b"\n"
    data += sentinel(len(cases)) + b"\n"
    line += 1
    return bytes(data), where, line


def assert_no_controls(text, what):
    """An error is one line of text that cannot drive a terminal: no C0
    control (but a final LF), no DEL, no C1 control, whatever bytes the
    input held."""
    body = text[:-1] if text.endswith("\n") else text
    bad = [c for c in body if ord(c) < 0x20 or 0x7f <= ord(c) < 0xa0]
    assert not bad, (what, "control characters in an error", text)


def errors_json(root, cid=CONV):
    r = run_cli("errors", cid, "--json", root=root)
    assert r.code == 0 and r.err == "", r
    return [json.loads(x) for x in r.out.splitlines()]


def check_corpus_mirror(root, cases, data, where, nlines, how):
    """The mirror holds exactly what the corpus journal must give."""
    bad = [(l, o, v) for l, o, v, _ in where if v not in ("ok", "blank")]
    got = [(e["line"], e["offset"], e["reason"]) for e in errors_json(root)]
    if got != bad:
        desc = {l: d for l, _, _, d in where}
        diff = sorted(set(got) ^ set(bad))
        raise AssertionError("%s: bad lines differ from the corpus (got ^ want): %s" % (
            how, [(x, desc.get(x[0], "a sentinel line")) for x in diff]))
    rows = query(root, "SELECT line, byte_offset, reason, message FROM bad_lines"
                       " WHERE conversation_id = ? ORDER BY line", (CONV,))
    assert [r[:3] for r in rows] == bad, (how, rows)
    assert all(r[3] for r in rows), (how, "a bad line without a message", rows)
    for r in rows:
        assert_no_controls(r[3], (how, "bad_lines.message of line", r[0]))
    r = run_cli("errors", CONV, root=root)
    assert r.code == 0 and len(r.out.split("\n")) == len(bad) + 1, (how, r)
    for text in r.out.split("\n")[:-1]:
        assert_no_controls(text, (how, "jmirror errors"))
    # Every sentinel (the valid line before and after each corpus line) is
    # mirrored at its physical line number; the only other message is the
    # corpus's own valid `message` line(s).
    msgs = dict(query(root, "SELECT id, seq FROM messages WHERE conversation_id = ?", (CONV,)))
    for i in range(len(cases) + 1):
        want_seq = 2 * i + 1
        assert msgs.get("s%03d" % i) == want_seq, (how, "sentinel", i, msgs.get("s%03d" % i))
    ok_values = [(l, event_value(b)) for (_, b, _), (l, _, v, _) in zip(cases, where)
                 if v == "ok"]
    ok_msgs = {(e["id"], l) for l, e in ok_values if e["type"] == "message"}
    others = {(k, s) for k, s in msgs.items() if not k.startswith("s")}
    assert others == ok_msgs, (how, others, ok_msgs)
    unknown = sum(1 for _, e in ok_values if e["type"] not in KNOWN_TYPES)
    conv = query(root, "SELECT bad_lines, unknown_events, message_count FROM conversations"
                       " WHERE id = ?", (CONV,))
    assert conv == [(len(bad), unknown, len(cases) + 1 + len(ok_msgs))], (how, conv)
    src = query(root, "SELECT byte_offset, lines FROM sources WHERE conversation_id = ?", (CONV,))
    assert src == [(len(data), nlines)], (how, src, len(data), nlines)
    code, j, r = verify(root)
    assert code == 0 and j["ok"] == j["checked"] == 1, (how, r)


# --------------------------------------------------------------------------
# (a) the corpus through journal files.

def test_corpus_replay_and_ingest(tmp):
    """The corpus in one journal file: `replay`, a fresh `ingest`, and an
    `ingest` after each of three pieces cut mid-line give every corpus line
    its verdict at its line and offset, and mirror every valid line around it."""
    cases = load_corpus()
    data, where, nlines = corpus_journal(cases)
    nbad = sum(1 for _, _, v, _ in where if v not in ("ok", "blank"))
    nok = sum(1 for _, _, v, _ in where if v == "ok")
    assert nbad >= 80 and nok >= 20, (nbad, nok)
    root = os.path.join(tmp, "root")
    foreign_append(jfile(root), data)
    r = run_cli("replay", CONV, "--json", root=root)
    assert r.code == 0 and r.err == "", r
    j = json.loads(r.out)
    assert j == [{"conversation": CONV, "events": len(cases) + 1 + nok, "bad_lines": nbad,
                  "bytes": len(data), "removed": False}], j
    check_corpus_mirror(root, cases, data, where, nlines, "replay")
    replayed = query(root, "SELECT * FROM bad_lines ORDER BY line")

    shutil.rmtree(os.path.join(root, "mirror"))
    r = run_cli("ingest", "--json", root=root)
    assert r.code == 0 and r.err == "", r
    j = json.loads(r.out)
    assert (j["events"], j["bad_lines"]) == (len(cases) + 1 + nok, nbad), j
    check_corpus_mirror(root, cases, data, where, nlines, "ingest")
    assert query(root, "SELECT * FROM bad_lines ORDER BY line") == replayed

    # Written in three pieces, each cut inside a corpus line (the pending
    # tail holds invalid bytes): an ingest after each.
    root2 = os.path.join(tmp, "root2")
    cuts = [where[len(where) // 3][1] + 5, where[2 * len(where) // 3][1] + 3, len(data)]
    start = 0
    for cut in cuts:
        foreign_append(jfile(root2), data[start:cut])
        start = cut
        r = run_cli("ingest", CONV, root=root2)
        assert r.code == 0 and r.err == "", r
        got = query(root2, "SELECT byte_offset FROM sources")
        assert got == [(data.rfind(b"\n", 0, cut) + 1,)], (cut, got)
    check_corpus_mirror(root2, cases, data, where, nlines, "ingest in pieces")
    assert query(root2, "SELECT * FROM bad_lines ORDER BY line") == replayed


def test_corpus_daemon(tmp):
    """jmirrord catching up on the first half of the corpus journal, then
    tailing the rest appended by a foreign writer in pieces."""
    cases = load_corpus()
    data, where, nlines = corpus_journal(cases)
    root = os.path.join(tmp, "root")
    half = where[len(where) // 2][1] + 7  # inside a corpus line
    foreign_append(jfile(root), data[:half])
    with Daemon(root):
        wait_until(lambda: query(root, "SELECT byte_offset FROM sources") ==
                   [(data.rfind(b"\n", 0, half) + 1,)], 30, "the daemon's catch-up")
        pos = half
        step = (len(data) - half) // 4 + 1
        while pos < len(data):
            foreign_append(jfile(root), data[pos:pos + step])
            pos += step
            time.sleep(0.05)
        wait_until(lambda: query(root, "SELECT byte_offset FROM sources") == [(len(data),)],
                   30, "the daemon to ingest the whole corpus journal")
        check_corpus_mirror(root, cases, data, where, nlines, "jmirrord")
    # What the daemon recorded equals a clean replay.
    tables = ("SELECT * FROM bad_lines ORDER BY line",
              "SELECT * FROM messages ORDER BY seq",
              "SELECT * FROM conversations")
    tailed = [query(root, q) for q in tables]
    assert run_cli("replay", CONV, root=root).code == 0
    assert [query(root, q) for q in tables] == tailed


# --------------------------------------------------------------------------
# (a) the corpus through `jmirror append`.

def journal_values(root, cid):
    with open(jfile(root, cid), "rb") as f:
        text = f.read()
    assert text.endswith(b"\n"), text[-100:]
    return text, [json.loads(l.decode("utf-8")) for l in text.split(b"\n")[:-1]]


def test_corpus_append_one_by_one(tmp):
    """Each corpus line as `jmirror append c1 LINE`: accepted exactly when
    the corpus says ok; a refusal is one `jmirror: refused event` line,
    exit 1, stdout empty and the file untouched; the journal holds exactly
    the accepted events, in order.  A line with a NUL byte cannot be an
    argument: those go through the bulk test only."""
    cases = load_corpus()
    root = os.path.join(tmp, "root")
    accepted, skipped = [], []
    for want, b, desc in cases:
        if b"\0" in b:
            skipped.append(desc)
            continue
        size = os.path.getsize(jfile(root)) if os.path.exists(jfile(root)) else None
        # `--` first: a line such as -1.5e3 would be taken for an option.
        r = run_cli("append", "--sync", "none", "--", CONV, os.fsdecode(b), root=root)
        assert_no_controls(r.err, desc)
        if want == "ok":
            assert r.code == 0 and r.out == "" and r.err == "", (desc, r)
            accepted.append(event_value(b))
        else:
            assert r.code == 1, (desc, want, r)
            assert r.out == "", (desc, r)
            assert r.err.startswith("jmirror: refused event for '%s': " % CONV), (desc, r)
            assert r.err.endswith("\n") and r.err.count("\n") == 1, (desc, r)
            assert len(r.err) > len("jmirror: refused event for 'c1': ") + 5, (desc, r)
            after = os.path.getsize(jfile(root)) if os.path.exists(jfile(root)) else None
            assert after == size, (desc, size, after)
    assert len(skipped) == sum(1 for _, b, _ in cases if b"\0" in b) and len(skipped) <= 3, skipped
    note("%d lines appended one by one, %d skipped (NUL bytes): %s"
         % (len(cases) - len(skipped), len(skipped), skipped))
    text, values = journal_values(root, CONV)
    assert values == accepted, (values, accepted)
    # The journal reads back with no bad line.
    r = run_cli("ingest", "--json", root=root)
    assert r.code == 0, r
    j = json.loads(r.out)
    assert (j["events"], j["bad_lines"]) == (len(accepted), 0), j
    assert errors_json(root) == []


def test_corpus_append_bulk(tmp):
    """The whole corpus as one `jmirror append c1 -` import: every bad line
    is refused by its input line number (one stderr line each), blank lines
    are skipped, the valid ones are written in order; exit 1; the summary
    counts them.  The result equals the one-by-one appends."""
    cases = load_corpus()
    root = os.path.join(tmp, "root")
    stdin = b"".join(b + b"\n" for _, b, _ in cases)
    r = run_cli("append", CONV, "-", "--sync", "none", root=root, stdin=stdin)
    verdicts = [file_verdict(w, b) for w, b, _ in cases]
    refused = [i + 1 for i, v in enumerate(verdicts) if v not in ("ok", "blank")]
    accepted = [event_value(b) for (w, b, _), v in zip(cases, verdicts) if v == "ok"]
    assert r.code == 1, r
    want = "appended %d events to '%s', refused %d (lines %s, ...)\n" % (
        len(accepted), CONV, len(refused), ", ".join(str(x) for x in refused[:8]))
    assert r.out == want, (r.out, want)
    errs = r.err.split("\n")
    assert errs[-1] == "", errs[-1]
    errs = errs[:-1]
    for e in errs:
        assert_no_controls(e, "bulk append")
    assert [int(re.match(r"^jmirror: stdin line (\d+): .{5,}$", e).group(1)) for e in errs] \
        == refused, errs
    text, values = journal_values(root, CONV)
    assert values == accepted, (values, accepted)
    # Byte for byte what appending the accepted lines one at a time wrote.
    other = os.path.join(tmp, "other")
    for (w, b, _), v in zip(cases, verdicts):
        if v == "ok":
            r2 = run_cli("append", "--sync", "none", "--", CONV, os.fsdecode(b), root=other)
            assert r2.code == 0, r2
    with open(jfile(other), "rb") as f:
        assert f.read() == text
    r = run_cli("ingest", "--json", root=root)
    j = json.loads(r.out)
    assert r.code == 0 and (j["events"], j["bad_lines"]) == (len(accepted), 0), r


# --------------------------------------------------------------------------
# (b) a line over the real maximum.

BIG_FACTOR = 3  # the oversized line is 3x the maximum: memory must not follow it


def write_big(path, prefix, n_content, suffix):
    """prefix + a line of n_content bytes (a message whose content is 'y'
    repeated) + LF + suffix, written in 1 MiB pieces."""
    head = b'{"type":"message","ts":"2026-01-01T00:00:01Z","id":"big","role":"user","content":"'
    tail = b'"}'
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    with open(path, "ab") as f:
        f.write(prefix)
        f.write(head)
        left = n_content - len(head) - len(tail)
        piece = b"y" * (1 << 20)
        while left > 0:
            k = min(left, len(piece))
            f.write(piece[:k])
            left -= k
        f.write(tail + b"\n")
        f.write(suffix)


def run_measured(args, stdin_path=None, timeout=120):
    """Run jmirror; (exit code, stdout, stderr, max RSS in bytes) of that
    one child (os.wait4: RUSAGE_CHILDREN for this process alone)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            open(stdin_path or os.devnull, "rb") as inp:
        env = dict(os.environ)
        env.pop("JMIRROR_ROOT", None)
        p = subprocess.Popen([JMIRROR] + [str(a) for a in args], stdin=inp, stdout=out,
                             stderr=err, env=env)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                os.wait4(p.pid, 0)
                raise AssertionError("timed out: %r" % (args,))
            time.sleep(0.01)
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (p.returncode, out.read().decode("utf-8", "replace"),
                err.read().decode("utf-8", "replace"), ru.ru_maxrss * 1024)


def vm_hwm(pid):
    """Peak RSS of a running process (Linux), bytes; None elsewhere."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for l in f:
                if l.startswith("VmHWM:"):
                    return int(l.split()[1]) * 1024
    except OSError:
        return None
    return None


BEFORE = json.dumps({"type": "message", "ts": "2026-01-01T00:00:00Z", "id": "before",
                     "role": "user", "content": "a"}).encode() + b"\n"


def big_journal(root, mx, before=BEFORE):
    """[before +] the long line + a valid line, appended to c1's file:
    (content bytes of the long line, its offset, the file's size)."""
    after = json.dumps({"type": "message", "ts": "2026-01-01T00:00:02Z", "id": "after",
                        "role": "user", "content": "b"}).encode() + b"\n"
    n = BIG_FACTOR * mx
    start = os.path.getsize(jfile(root)) if os.path.exists(jfile(root)) else 0
    write_big(jfile(root), before, n, after)
    return n, start + len(before), start + len(before) + n + 1 + len(after)


def check_too_long(root, n, offset, size, how):
    errs = errors_json(root)
    assert [(e["line"], e["offset"], e["reason"]) for e in errs] == [(2, offset, "too_long")], (
        how, errs)
    assert "line of %d bytes exceeds the maximum of %d" % (n, max_line()) == errs[0]["message"], (
        how, errs)
    rows = query(root, "SELECT id, seq FROM messages ORDER BY seq")
    assert rows == [("before", 1), ("after", 3)], (how, rows)
    assert query(root, "SELECT byte_offset, lines FROM sources") == [(size, 3)], how


def test_too_long_replay_and_ingest(tmp):
    """A line 3x the 64 MiB maximum written by a foreign writer between two
    valid lines: `replay` and `ingest` record one too_long bad line at line 2,
    byte offset of its start, mirror the line after it, and use memory
    bounded by the maximum, not by the line."""
    mx = max_line()
    root = os.path.join(tmp, "root")
    t0 = time.monotonic()
    n, offset, size = big_journal(root, mx)
    note("wrote a %d MiB line in %.2f s" % (n >> 20, time.monotonic() - t0))
    try:
        for how, args in (("replay", ["replay", CONV]), ("ingest", ["ingest", CONV]),
                          ("replay --all", ["replay", "--all"])):
            shutil.rmtree(os.path.join(root, "mirror"), ignore_errors=True)
            t0 = time.monotonic()
            code, out, err, rss = run_measured(["--root", root] + args)
            took = time.monotonic() - t0
            assert code == 0 and err == "", (how, code, out, err)
            note("%s: %.2f s, max RSS %d MiB for a %d MiB line" % (how, took, rss >> 20, n >> 20))
            check_too_long(root, n, offset, size, how)
            # The reader keeps at most the maximum of a line; well under the
            # line itself.
            if not SANITIZED:
                assert rss < mx + (48 << 20), (how, rss)
                assert rss < n // 2, (how, rss)
    finally:
        os.unlink(jfile(root))


def test_too_long_daemon(tmp):
    """The same line appended by a foreign writer while jmirrord runs (and
    one more valid line after it): one too_long bad line, the next line
    mirrored, the daemon's peak RSS bounded by the maximum."""
    mx = max_line()
    root = os.path.join(tmp, "root")
    foreign_append(jfile(root), BEFORE)
    try:
        with Daemon(root) as d:
            wait_until(lambda: query(root, "SELECT count(*) FROM messages") == [(1,)], 20,
                       "the first line")
            base = vm_hwm(d.pid)
            t0 = time.monotonic()
            n, offset, size = big_journal(root, mx, before=b"")
            wait_until(lambda: query(root, "SELECT byte_offset FROM sources") == [(size,)],
                       60, "the daemon to read past the long line")
            note("jmirrord: past a %d MiB line in %.2f s" % (n >> 20, time.monotonic() - t0))
            errs = errors_json(root)
            assert [(e["line"], e["offset"], e["reason"]) for e in errs] == [
                (2, offset, "too_long")], errs
            rows = query(root, "SELECT id, seq FROM messages ORDER BY seq")
            assert rows == [("before", 1), ("after", 3)], rows
            hwm = vm_hwm(d.pid)
            if hwm is not None:
                note("jmirrord peak RSS: %d MiB before, %d MiB after" % (base >> 20, hwm >> 20))
                assert SANITIZED or hwm < mx + (64 << 20) and hwm < n // 2, (base, hwm)
            assert d.alive()
    finally:
        os.unlink(jfile(root))


def test_too_long_append(tmp):
    """`jmirror append c1 -` given a line 3x the maximum then a valid one:
    the long one refused with one stderr line naming its input line and
    the maximum, the valid one written, exit 1, memory bounded.  (A single
    event argument cannot be that long: Linux refuses an argument over
    128 KiB at exec.)"""
    mx = max_line()
    inp = os.path.join(tmp, "input.jsonl")
    ok = json.dumps({"type": "message", "ts": "2026-01-01T00:00:02Z", "id": "after",
                     "role": "user", "content": "b"}).encode()
    write_big(inp, b"", BIG_FACTOR * mx, ok + b"\n")
    root = os.path.join(tmp, "root")
    try:
        t0 = time.monotonic()
        code, out, err, rss = run_measured(["--root", root, "append", CONV, "-", "--sync", "none"],
                                           stdin_path=inp)
        note("append: %.2f s, max RSS %d MiB" % (time.monotonic() - t0, rss >> 20))
        assert code == 1, (code, out, err)
        assert err == "jmirror: stdin line 1: line of %d bytes exceeds the maximum of %d\n" % (
            BIG_FACTOR * mx, mx), err
        assert out == "appended 1 event to '%s', refused 1 (line 1)\n" % CONV, out
        with open(jfile(root), "rb") as f:
            assert json.loads(f.read()) == event_value(ok)
        assert SANITIZED or rss < mx + (48 << 20) and rss < BIG_FACTOR * mx // 2, rss
    finally:
        os.unlink(inp)


if __name__ == "__main__":
    run(globals())
