"""End-to-end tests of `jmirror append`: the real binary on real files.

Every check reads the journal back as bytes and parses it with Python's own
json module, so the CLI is held to what any other reader of the format sees.
"""
import json
import os
import re
import resource
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import JMIRROR, run, run_cli  # noqa: E402

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")


def msg(mid, content, **extra):
    ev = {"type": "message", "id": mid, "role": "user", "content": content}
    ev.update(extra)
    return json.dumps(ev, ensure_ascii=False)


def jfile(root, cid):
    return os.path.join(root, "journal", cid + ".jsonl")


def events(path):
    """Every line of a journal, parsed; asserts the file is well formed."""
    with open(path, "rb") as f:
        data = f.read()
    assert data.endswith(b"\n"), data[-80:]
    assert b"\r" not in data, "a CR reached the journal"
    out = []
    for raw in data.split(b"\n")[:-1]:
        ev = json.loads(raw.decode("utf-8"))
        assert isinstance(ev, dict), raw
        assert TS_RE.match(ev["ts"]), ev["ts"]
        out.append(ev)
    return out


def tree(top):
    """Every path under top, relative, sorted."""
    found = []
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            found.append(os.path.relpath(os.path.join(d, n), top))
    return sorted(found)


def one_line(text):
    lines = text.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --------------------------------------------------------------------------
# One event from the command line.

def test_append_one(tmp):
    r = run_cli("append", "c1", msg("m1", "hi ü 한국어 😀 \"q\" \\ \u0001"), root=tmp)
    assert r.code == 0, r
    assert r.err == "", r
    evs = events(jfile(tmp, "c1"))
    assert len(evs) == 1, evs
    assert evs[0]["content"] == "hi ü 한국어 😀 \"q\" \\ \u0001", evs[0]
    assert evs[0]["id"] == "m1" and evs[0]["role"] == "user"
    # A given ts is stored normalised.
    r = run_cli("append", "c1", msg("m2", "x", ts="2026-01-02T03:04:05Z"), root=tmp)
    assert r.code == 0, r
    evs = events(jfile(tmp, "c1"))
    assert [e["id"] for e in evs] == ["m1", "m2"]
    assert evs[1]["ts"] == "2026-01-02T03:04:05.000000Z", evs[1]


def test_refused_event(tmp):
    r = run_cli("append", "c1", msg("m1", "keep"), root=tmp)
    assert r.code == 0, r
    path = jfile(tmp, "c1")
    before = open(path, "rb").read()
    bad = '{"type":"message","id":"m2","role":"user"}'  # no content
    r = run_cli("append", "c1", bad, root=tmp)
    assert r.code == 1, r
    line = one_line(r.err)
    assert line.startswith("jmirror: "), line
    assert "'content'" in line and "c1" in line, line
    assert r.out == "", r
    assert open(path, "rb").read() == before
    # Wrong type, bad ts, not JSON, not an object: refused the same way.
    for ev, needle in [('{"type":"message","id":"m2","role":"robot","content":""}', "role"),
                       ('{"type":"a","ts":"2026-13-01T00:00:00Z"}', "ts"),
                       ('{"type":', "JSON"),
                       ('[]', "object"),
                       ('{"type":"a","conversation_id":"c2"}', "conversation_id")]:
        r = run_cli("append", "c1", ev, root=tmp)
        assert r.code == 1, (ev, r)
        assert needle in one_line(r.err), (ev, r)
        assert open(path, "rb").read() == before
    # For a new conversation no file appears at all.
    r = run_cli("append", "fresh", bad, root=tmp)
    assert r.code == 1, r
    assert not os.path.exists(jfile(tmp, "fresh"))


def test_bad_ids(tmp):
    root = os.path.join(tmp, "root")
    for cid in ["..", ".", "a/b", "Abc", "", "x" * 129, ".hidden", "../evil",
                "/abs", "a b", "é", "a\\b", "a\nb"]:
        r = run_cli("append", cid, msg("m1", "x"), root=root)
        assert r.code == 1, (cid, r)
        assert "invalid conversation id" in one_line(r.err), (cid, r)
        r = run_cli("append", cid, "-", root=root, stdin=msg("m1", "x") + "\n")
        assert r.code == 1, (cid, r)
    # Nothing was created anywhere: not even the root.
    assert tree(tmp) == [], tree(tmp)
    r = run_cli("append", "x" * 128, msg("m1", "x"), root=root)
    assert r.code == 0, r
    assert os.path.exists(jfile(root, "x" * 128))


# --------------------------------------------------------------------------
# Bulk import from standard input.

def test_bulk_mixed(tmp):
    lines = [
        msg("m1", "one"),                                   # 1 ok
        "",                                                 # 2 blank
        '{"type":"message"',                                # 3 bad JSON
        msg("m2", "crlf") + "\r",                           # 4 ok, CRLF
        "   \t",                                            # 5 blank
        '{"type":"message","id":"m3","role":"user"}',       # 6 missing
        "[1,2]",                                            # 7 not object
        msg("m4", "ü 😀", ts="2026-01-02T03:04:05.123Z") + "\r",  # 8 ok
        '{"type":"a","ts":"2026-01-02T03:04:05Z","v":2}',   # 9 version
        "\r",                                               # 10 blank
        '{"type":"x.new","ts":"2026-01-02T03:04:05Z"}',     # 11 ok, unknown
    ]
    data = ("\n".join(lines) + "\n").encode()
    r = run_cli("append", "c1", "-", root=tmp, stdin=data)
    assert r.code == 1, r
    assert r.out == "appended 4 events to 'c1', refused 4 (lines 3, 6, 7, 9)\n", r
    err = r.err.splitlines()
    assert len(err) == 4, err
    for n, line in zip([3, 6, 7, 9], err):
        assert line.startswith("jmirror: stdin line %d: " % n), line
    evs = events(jfile(tmp, "c1"))
    assert [e.get("id") for e in evs] == ["m1", "m2", "m4", None], evs
    assert evs[2]["content"] == "ü 😀"
    assert evs[2]["ts"] == "2026-01-02T03:04:05.123000Z"
    assert evs[3]["type"] == "x.new"


def test_bulk_all_good_and_empty(tmp):
    data = "".join(msg("m%d" % i, "x%d" % i) + "\n" for i in range(50))
    r = run_cli("append", "c1", "-", root=tmp, stdin=data)
    assert r.code == 0, r
    assert r.out == "appended 50 events to 'c1'\n", r
    assert r.err == "", r
    assert [e["id"] for e in events(jfile(tmp, "c1"))] == ["m%d" % i for i in range(50)]
    # No operand means standard input too.
    r = run_cli("append", "c1", root=tmp, stdin=msg("m50", "y") + "\n")
    assert r.code == 0 and r.out == "appended 1 event to 'c1'\n", r
    r = run_cli("append", "c1", "-", root=tmp, stdin=b"")
    assert r.code == 0 and r.out == "appended 0 events to 'c1'\n", r
    assert len(events(jfile(tmp, "c1"))) == 51


def test_bulk_no_final_newline(tmp):
    data = msg("m1", "a") + "\n" + msg("m2", "last, no LF")
    r = run_cli("append", "c1", "-", root=tmp, stdin=data)
    assert r.code == 0, r
    assert r.out == "appended 2 events to 'c1'\n", r
    evs = events(jfile(tmp, "c1"))
    assert [e["content"] for e in evs] == ["a", "last, no LF"]
    # A refused last line without LF still has its number.
    r = run_cli("append", "c1", "-", root=tmp, stdin=msg("m3", "b") + "\r\n{oops")
    assert r.code == 1, r
    assert r.out == "appended 1 event to 'c1', refused 1 (line 2)\n", r
    assert one_line(r.err).startswith("jmirror: stdin line 2: "), r
    assert len(events(jfile(tmp, "c1"))) == 3


def test_bulk_many_refused(tmp):
    data = "".join("bad %d\n" % i for i in range(12)) + msg("m1", "ok") + "\n"
    r = run_cli("append", "c1", "-", root=tmp, stdin=data)
    assert r.code == 1, r
    assert r.out == ("appended 1 event to 'c1', refused 12 "
                     "(lines 1, 2, 3, 4, 5, 6, 7, 8, ...)\n"), r
    assert len(r.err.splitlines()) == 12, r


# --------------------------------------------------------------------------
# Options and help.

def test_sync_modes(tmp):
    for i, mode in enumerate(["always", "batch", "none"]):
        r = run_cli("append", "c1", msg("m%d" % i, mode), "--sync", mode, root=tmp)
        assert r.code == 0, (mode, r)
        r = run_cli("append", "c1", "-", "--sync=" + mode, root=tmp,
                    stdin=msg("b%d" % i, mode) + "\n")
        assert r.code == 0, (mode, r)
    assert len(events(jfile(tmp, "c1"))) == 6
    before = open(jfile(tmp, "c1"), "rb").read()
    r = run_cli("append", "c1", msg("m9", "x"), "--sync", "bogus", root=tmp)
    assert r.code == 2, r
    assert "bogus" in r.err, r
    r = run_cli("append", "c1", msg("m9", "x"), "--sync", root=tmp)
    assert r.code == 2, r
    assert open(jfile(tmp, "c1"), "rb").read() == before


def test_help_and_usage(tmp):
    r = run_cli("--help")
    assert r.code == 0, r
    assert "append" in r.out and r.out.startswith("usage: jmirror"), r
    r = run_cli("help", "append")
    assert r.code == 0, r
    assert "--sync" in r.out and "conversation_id" in r.out, r
    r = run_cli("append", "--help")
    assert r.code == 0 and "--sync" in r.out, r
    for args in [("frobnicate",), ("help", "frobnicate"), ("--frob", "append"), (),
                 ("append",), ("append", "c1", "{}", "extra"),
                 ("append", "c1", "{}", "--nope")]:
        r = run_cli(*args, root=tmp)
        assert r.code == 2, (args, r)
        assert r.err.strip() != "", (args, r)
    r = run_cli("frobnicate")
    assert "unknown command 'frobnicate'" in one_line(r.err), r
    assert tree(tmp) == [], tree(tmp)


# --------------------------------------------------------------------------
# Where the root is.

def test_root_from_env_and_flag(tmp):
    env_root = os.path.join(tmp, "env")
    flag_root = os.path.join(tmp, "flag")
    r = run_cli("append", "c1", msg("m1", "via env"), env={"JMIRROR_ROOT": env_root})
    assert r.code == 0, r
    assert [e["content"] for e in events(jfile(env_root, "c1"))] == ["via env"]
    # --root wins over the environment.
    r = run_cli("append", "c1", msg("m2", "via flag"), root=flag_root,
                env={"JMIRROR_ROOT": env_root})
    assert r.code == 0, r
    assert [e["content"] for e in events(jfile(flag_root, "c1"))] == ["via flag"]
    assert len(events(jfile(env_root, "c1"))) == 1
    r = run_cli("--root=" + flag_root, "append", "c1", msg("m3", "flag="))
    assert r.code == 0, r
    assert len(events(jfile(flag_root, "c1"))) == 2
    if sys.platform != "darwin":
        home = os.path.join(tmp, "home")
        r = run_cli("append", "c1", msg("m4", "default"),
                    env={"HOME": home, "XDG_DATA_HOME": ""})
        assert r.code == 0, r
        assert len(events(jfile(os.path.join(home, ".local", "share", "jmirror"), "c1"))) == 1
        xdg = os.path.join(tmp, "xdg")
        r = run_cli("append", "c1", msg("m5", "xdg"), env={"HOME": home, "XDG_DATA_HOME": xdg})
        assert r.code == 0, r
        assert len(events(jfile(os.path.join(xdg, "jmirror"), "c1"))) == 1
    # An empty path is a mistake (an unset shell variable), never the
    # default root: refused, nothing written anywhere.
    home = os.path.join(tmp, "home2")
    for args in (["--root", ""], ["--root="], ["--mirror", ""], ["--mirror="]):
        r = run_cli(*args, "append", "c1", msg("m6", "nowhere"), env={"HOME": home})
        assert r.code == 2 and "non-empty path" in r.err, (args, r)
    assert not os.path.exists(home)
    # No path at all after the option: said so, not "unknown option".
    for opt in ("--root", "--mirror"):
        r = run_cli(opt, env={"HOME": home})
        assert r.code == 2 and f"option '{opt}' needs a path" in r.err, (opt, r)
        assert len(r.err.splitlines()) == 1, r
    assert not os.path.exists(home)


def test_not_a_regular_file(tmp):
    # A FIFO under the journal file's name: refused at once, in one line,
    # never a hang (no reader) and never an event lost into the pipe.
    os.makedirs(os.path.join(tmp, "journal"))
    os.mkfifo(jfile(tmp, "c1"))
    for sync in ("always", "batch", "none"):
        r = run_cli("append", "c1", msg("m1", "into a pipe"), "--sync", sync,
                    root=tmp, timeout=20)
        assert r.code == 1, r
        assert "not a regular file" in one_line(r.err) and jfile(tmp, "c1") in r.err, r


def test_root_with_spaces_and_unicode(tmp):
    root = os.path.join(tmp, "my journals", "ünï cødé 한국어 😀")
    r = run_cli("append", "c1", msg("m1", "x"), root=root)
    assert r.code == 0, r
    r = run_cli("append", "c1", "-", root=root, stdin=msg("m2", "y") + "\n")
    assert r.code == 0, r
    assert [e["id"] for e in events(jfile(root, "c1"))] == ["m1", "m2"]
    # An error names the path as given, in one line.
    os.mkdir(jfile(root, "c2"))
    r = run_cli("append", "c2", msg("m3", "z"), root=root)
    assert r.code == 1, r
    assert jfile(root, "c2") in one_line(r.err), r


# --------------------------------------------------------------------------
# A real write failure: RLIMIT_FSIZE makes the write that crosses the limit
# short and the next one fail with EFBIG, with no fault injection at all.

def small_fsize_limit(limit):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def run_limited(limit, root, *args, stdin=b""):
    p = subprocess.run([JMIRROR, "--root", root] + list(args), input=stdin,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       preexec_fn=small_fsize_limit(limit), timeout=120)
    return p.returncode, p.stdout.decode(), p.stderr.decode()


def test_write_failure_mid_import(tmp):
    data = "".join(msg("m%d" % i, "x" * 150) + "\n" for i in range(100))
    code, out, err = run_limited(5000, tmp, "append", "c1", "-", "--sync", "always",
                                 stdin=data.encode())
    assert code == 1, (code, out, err)
    path = jfile(tmp, "c1")
    assert path in one_line(err) and "too large" in err, err
    m = re.match(r"^appended (\d+) events to 'c1'\n$", out)
    assert m, out
    n = int(m.group(1))
    assert 0 < n < 100
    # The import stopped at the failure; the half-written line was undone.
    evs = events(path)
    assert [e["id"] for e in evs] == ["m%d" % i for i in range(n)], evs
    size = os.path.getsize(path)
    assert size <= 5000
    # A single event that does not fit fails the same way, file untouched.
    before = open(path, "rb").read()
    code, out, err = run_limited(size + 20, tmp, "append", "c1", msg("big", "y" * 100))
    assert code == 1 and path in one_line(err), (code, out, err)
    assert open(path, "rb").read() == before
    # Without the limit the rest goes in, right after the last good line.
    rest = "".join(msg("m%d" % i, "x" * 150) + "\n" for i in range(n, 100))
    r = run_cli("append", "c1", "-", root=tmp, stdin=rest)
    assert r.code == 0, r
    assert [e["id"] for e in events(path)] == ["m%d" % i for i in range(100)]


# --------------------------------------------------------------------------
# Concurrency: whole processes appending to one conversation at once.

def test_concurrent_bulk(tmp):
    writers, per = 8, 2000
    root = os.path.join(tmp, "root")
    for w in range(writers):  # all input first, so the writers overlap
        with open(os.path.join(tmp, "in%d.jsonl" % w), "w", encoding="utf-8") as f:
            for n in range(per):
                pad = chr(ord("a") + w) * ((n * 7919 + w * 131) % 3000)
                f.write(json.dumps({"type": "x.load", "w": w, "n": n, "pad": pad}) + "\n")
    procs = []
    for w in range(writers):
        fin = open(os.path.join(tmp, "in%d.jsonl" % w), "rb")
        procs.append((subprocess.Popen([JMIRROR, "--root", root, "append", "c", "-"],
                                       stdin=fin, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE), fin))
    for p, fin in procs:
        out, err = p.communicate(timeout=600)
        fin.close()
        assert p.returncode == 0, (p.returncode, err)
        assert out == b"appended %d events to 'c'\n" % per, out
    evs = events(jfile(root, "c"))
    assert len(evs) == writers * per, len(evs)
    nxt = [0] * writers
    for ev in evs:
        w, n = ev["w"], ev["n"]
        assert n == nxt[w], (w, n, nxt[w])
        nxt[w] += 1
        assert ev["pad"] == chr(ord("a") + w) * ((n * 7919 + w * 131) % 3000)
    assert nxt == [per] * writers
    switches = sum(1 for a, b in zip(evs, evs[1:]) if a["w"] != b["w"])
    print("# writers took turns %d times in %d lines" % (switches, len(evs)), flush=True)


if __name__ == "__main__":
    run(globals())
