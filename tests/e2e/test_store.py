"""End-to-end tests of the store commands: new, add, rename, delete,
restore, ls, show, search -- the real jmirror binary on real files, with and
without a running jmirrord.

Output formats and exit codes are those of `jmirror help <command>`:
0 success, 1 failure (one line on stderr: "jmirror: ..."), 2 usage (the
message and a hint to `jmirror help <command>`).  Waiting on the daemon is a
poll with a deadline (its start); reads after writes are never waited for:
read-your-writes is the property under test.
"""
import fcntl
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import JMIRROR, run, run_cli  # noqa: E402

# jmirrord: $JMIRRORD, else the one built beside jmirror.
JMIRRORD = os.environ.get("JMIRRORD") or os.path.join(
    os.path.dirname(os.path.abspath(JMIRROR)), "jmirrord")


def note(text):
    print("# " + text, flush=True)


def ok(*args, root, stdin=None):
    """Run a command that must succeed; returns its stdout."""
    r = run_cli(*args, root=root, stdin=stdin)
    assert r.code == 0, (args, r)
    assert r.err == "", (args, r)
    return r.out


def okj(*args, root):
    return json.loads(ok(*args, "--json", root=root))


def fails(code, *args, root, stdin=None):
    """Run a command that must fail with `code`; returns its stderr."""
    r = run_cli(*args, root=root, stdin=stdin)
    assert r.code == code, (args, r)
    assert r.out == "", (args, r)
    if code == 1:
        lines = r.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("jmirror: "), (args, r)
    else:
        cmd = args[0]
        assert r.err.startswith("jmirror %s: " % cmd), (args, r)
        assert "(see 'jmirror help %s')" % cmd in r.err, (args, r)
    return r.err


def journal_state(root):
    """Every file under root/journal with its size (what a write changes)."""
    j = os.path.join(root, "journal")
    if not os.path.isdir(j):
        return {}
    return {n: os.path.getsize(os.path.join(j, n)) for n in sorted(os.listdir(j))}


def tree(root):
    """Every path under root, relative (to see that nothing was created)."""
    out = []
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.append(os.path.relpath(os.path.join(d, n), root))
    return sorted(out)


def new(root, *args):
    out = ok("new", *args, root=root)
    assert out.endswith("\n") and out.count("\n") == 1, out
    return out.strip()


def add(root, cid, role, content, *args):
    out = ok("add", cid, "--role", role, "--content", content, *args, root=root)
    assert out.count("\n") == 1, out
    return out.strip()


def show_json(root, cid, *args):
    return okj("show", cid, *args, root=root)


def ls_json(root, *args):
    return okj("ls", *args, root=root)


def search_json(root, *words):
    return okj("search", *words, root=root)["results"]


GEN_ID = re.compile(r"^[0-9abcdefghjkmnpqrstvwxyz]{26}$")
LS_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ|-) +(\d+)  (\S+) *(.*?)(  \(deleted\))?$")
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def parse_ls(out):
    rows = []
    for line in out.splitlines():
        if line.startswith("(more: "):
            continue
        m = LS_LINE.match(line)
        assert m, line
        rows.append({"when": m.group(1), "count": int(m.group(2)), "id": m.group(3),
                     "title": m.group(4), "deleted": m.group(5) is not None})
    return rows


# --------------------------------------------------------------------------

def test_seed_exercise(tmp):
    root = os.path.join(tmp, "fresh", "root")  # does not exist yet
    cid = new(root, "--title", "Hello 한국어", "--brain", "claude", "--meta", '{"a": [1, 2.5]}')
    assert GEN_ID.match(cid), cid
    cid2 = new(root, "--title", "second")
    assert GEN_ID.match(cid2) and cid2 > cid, (cid, cid2)
    assert new(root, "--id", "chat-1", "--title", "Chat one") == "chat-1"
    assert os.stat(os.path.join(root, "journal", "chat-1.jsonl")).st_mode & 0o777 == 0o600

    body = "안녕하세요 👋 \"quoted\" back\\slash\ttab"
    u1 = add(root, "chat-1", "user", body)
    assert GEN_ID.match(u1), u1
    a1 = add(root, "chat-1", "assistant", "반가워요 🙂 I'm fine", "--id", "a1", "--parent", u1,
             "--thinking", "they greet me", "--brain", "claude", "--meta", '{"k":true}')
    assert a1 == "a1"
    # From standard input: one trailing newline dropped, the rest kept.
    s1 = ok("add", "chat-1", "--role", "user", "-", root=root,
            stdin="line one\n  line two 🎉\n\n".encode()).strip()
    s2 = ok("add", "chat-1", "--role", "system", "-", root=root, stdin=b"no newline").strip()
    s3 = ok("add", "chat-1", "--role", "tool", "-", root=root, stdin=b"").strip()

    # ls: text and JSON.
    out = ok("ls", root=root)
    rows = parse_ls(out)
    assert [r["id"] for r in rows] == ["chat-1", cid2, cid], out
    assert rows[0]["count"] == 5 and rows[0]["title"] == "Chat one", rows
    assert rows[2]["title"] == "Hello 한국어" and rows[2]["count"] == 0, rows
    assert not any(r["deleted"] for r in rows)
    j = ls_json(root)
    assert j["next_cursor"] is None
    convs = {c["id"]: c for c in j["conversations"]}
    assert [c["id"] for c in j["conversations"]] == ["chat-1", cid2, cid]
    c = convs[cid]
    assert c["title"] == "Hello 한국어" and c["brain"] == "claude", c
    assert c["meta"] == {"a": [1, 2.5]}, c
    assert c["message_count"] == 0 and c["bad_lines"] == 0 and c["unknown_events"] == 0
    assert c["deleted_at"] is None and TS.match(c["created_at"]) and TS.match(c["updated_at"])
    assert convs["chat-1"]["message_count"] == 5
    assert convs["chat-1"]["updated_at"] >= convs["chat-1"]["created_at"]

    # show --json: every message, in order, content exact.
    sj = show_json(root, "chat-1")
    assert sj["conversation"]["id"] == "chat-1" and sj["conversation"]["message_count"] == 5
    msgs = sj["messages"]
    assert [m["id"] for m in msgs] == [u1, "a1", s1, s2, s3]
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "system", "tool"]
    assert [m["content"] for m in msgs] == [body, "반가워요 🙂 I'm fine", "line one\n  line two 🎉\n",
                                           "no newline", ""]
    assert msgs[0]["seq"] < msgs[1]["seq"] < msgs[2]["seq"]
    assert msgs[1]["parent_id"] == u1 and msgs[1]["parent_id_written"] == u1
    assert msgs[1]["thinking"] == "they greet me" and msgs[1]["brain"] == "claude"
    assert msgs[1]["meta"] == {"k": True}
    assert msgs[0]["parent_id"] is None and msgs[0]["thinking"] is None
    assert all(m["status"] == "complete" and TS.match(m["created_at"]) for m in msgs)

    # show: the transcript.
    out = ok("show", "chat-1", root=root)
    lines = out.split("\n")
    assert lines[0] == "Chat one (chat-1)", lines
    assert re.match(r"^created \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ, updated \d{4}-\d\d-\d\d "
                    r"\d\d:\d\d:\d\dZ, 5 messages$", lines[1]), lines
    assert lines[2] == ""
    assert re.match(r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\] user %s$" % u1, lines[3]), lines
    assert lines[4] == "  " + body, lines
    assert re.match(r"^\[.*\] assistant a1$", lines[6]), lines
    assert lines[7] == "  [thinking: 13 bytes; --thinking shows it]", lines
    assert lines[8] == "  반가워요 🙂 I'm fine"
    assert "  line one\n    line two 🎉\n" in out, out  # indented line by line
    assert "they greet me" not in out
    out = ok("show", "chat-1", "--thinking", root=root)
    assert "  <thinking>\n  they greet me\n  </thinking>\n  반가워요 🙂 I'm fine\n" in out, out
    out = ok("show", cid, root=root)
    assert out.startswith("Hello 한국어 (%s)\n" % cid) and "0 messages" in out, out
    assert show_json(root, cid)["messages"] == []

    # show --limit / --after: pages of the transcript.
    part = show_json(root, "chat-1", "--limit", "2")["messages"]
    assert [m["id"] for m in part] == [u1, "a1"]
    rest = show_json(root, "chat-1", "--after", str(part[-1]["seq"]))["messages"]
    assert [m["id"] for m in rest] == [s1, s2, s3]
    assert show_json(root, "chat-1", "--after", str(msgs[-1]["seq"]))["messages"] == []

    # rename
    assert ok("rename", "chat-1", "Renamed 제목", root=root) == ""
    assert parse_ls(ok("ls", root=root))[0]["title"] == "Renamed 제목"
    assert show_json(root, "chat-1")["conversation"]["title"] == "Renamed 제목"

    # delete: hidden, --deleted shows it marked; show still works; restore
    assert ok("delete", "chat-1", root=root) == ""
    assert [r["id"] for r in parse_ls(ok("ls", root=root))] == [cid2, cid]
    rows = parse_ls(ok("ls", "--deleted", root=root))
    assert [r["id"] for r in rows] == ["chat-1", cid2, cid]
    assert rows[0]["deleted"] and not rows[1]["deleted"]
    assert ls_json(root, "--deleted")["conversations"][0]["deleted_at"] is not None
    assert ", DELETED" in ok("show", "chat-1", root=root).split("\n")[1]
    assert search_json(root, "반가워요") == []
    assert ok("restore", "chat-1", root=root) == ""
    rows = parse_ls(ok("ls", root=root))
    assert [r["id"] for r in rows] == ["chat-1", cid2, cid] and rows[0]["count"] == 5
    assert ", DELETED" not in ok("show", "chat-1", root=root)

    # search: text with [marks] (stdout is not a terminal) and JSON
    out = ok("search", "반가워요", root=root)
    assert out == "chat-1 #%d assistant: [반가워요] 🙂 I'm fine\n" % msgs[1]["seq"], out
    res = search_json(root, "line", "two")
    assert len(res) == 1 and res[0]["message"] == s1 and res[0]["conversation"] == "chat-1"
    assert res[0]["role"] == "user" and res[0]["seq"] == msgs[2]["seq"]
    assert "[line]" in res[0]["snippet"] and "[two]" in res[0]["snippet"]
    assert isinstance(res[0]["rank"], float) and TS.match(res[0]["created_at"])
    out = ok("search", "line", "two", root=root)  # newlines in a snippet become spaces
    assert out.count("\n") == 1 and "[line] one   [line] [two] 🎉" in out, out

    # Nothing but journal/ and mirror/ was made in the root.
    assert sorted(os.listdir(root)) == ["journal", "mirror"]
    assert sorted(os.listdir(os.path.join(root, "journal"))) == sorted(
        ["chat-1.jsonl", cid + ".jsonl", cid2 + ".jsonl"])


def test_ls_pages(tmp):
    root = os.path.join(tmp, "r")
    ids = ["c%02d" % i for i in range(7)]
    for i in ids:
        new(root, "--id", i, "--title", "t " + i, *(["--brain", "odd"] if int(i[1:]) % 2 else []))
    seen, cursor, pages = [], None, 0
    while True:
        args = ["ls", "--limit", "3"] + (["--cursor", cursor] if cursor else [])
        out = ok(*args, root=root)
        pages += 1
        rows = parse_ls(out)
        seen += [r["id"] for r in rows]
        more = [l for l in out.splitlines() if l.startswith("(more: ")]
        if not more:
            break
        assert len(rows) == 3
        m = re.match(r"^\(more: jmirror ls --cursor ([0-9a-f]+)\)$", more[0])
        assert m, more
        cursor = m.group(1)
        j = ls_json(root, *args[1:])
        assert [c["id"] for c in j["conversations"]] == [r["id"] for r in rows]
        assert j["next_cursor"] == cursor
    assert seen == ids[::-1] and pages == 3, (seen, pages)
    j = ls_json(root, "--brain", "odd")
    assert [c["id"] for c in j["conversations"]] == ["c05", "c03", "c01"]
    assert ls_json(root, "--brain", "none")["conversations"] == []
    assert ls_json(root, "--limit", "0")["next_cursor"] is None  # 0: the default, 50


def test_errors_and_usage(tmp):
    root = os.path.join(tmp, "r")
    new(root, "--id", "c1")
    add(root, "c1", "user", "hello")
    before, paths = journal_state(root), tree(root)

    # Bad ids: exit 1, one line, nothing created anywhere.
    for bad in ["..", "a/b", "../x", "Abc", "", ".hidden", "x" * 129, "caf\u00e9", "a b"]:
        fails(1, "new", "--id", bad, root=root)
        fails(1, "add", bad, "--role", "user", "--content", "x", root=root)
        fails(1, "add", bad, "--role", "user", "-", root=root, stdin=b"x")
        fails(1, "rename", bad, "t", root=root)
        fails(1, "delete", bad, root=root)
        fails(1, "restore", bad, root=root)
        fails(1, "show", bad, root=root)
        fails(1, "search", "hello", "--conversation", bad, root=root)
    assert "invalid conversation id" in fails(1, "show", "Abc", root=root)

    # Missing conversation.
    for args in (["add", "nosuch", "--role", "user", "--content", "x"], ["rename", "nosuch", "t"],
                 ["delete", "nosuch"], ["restore", "nosuch"], ["show", "nosuch"],
                 ["search", "hello", "--conversation", "nosuch"],
                 ["search", "he", "--conversation", "nosuch", "--json"]):
        assert "nosuch" in fails(1, *args, root=root)
    # Refused events and an existing id.
    assert "c1" in fails(1, "new", "--id", "c1", root=root)
    fails(1, "add", "c1", "--role", "robot", "--content", "x", root=root)
    fails(1, "add", "c1", "--role", "user", "--content", "x", "--meta", "{bad", root=root)
    fails(1, "add", "c1", "--role", "user", "--content", "x", "--id", "m" * 257, root=root)
    fails(1, "new", "--id", "c2", "--meta", "[1,", root=root)
    fails(1, "add", "c1", "--role", "user", "-", root=root, stdin=b"\xff\xfe not utf-8")

    # Usage errors: exit 2, the message and the hint.
    usage = [
        ["new", "extra"], ["new", "--title"], ["new", "--bogus"],
        ["add"], ["add", "c1"], ["add", "c1", "--role", "user"],
        ["add", "c1", "--content", "x"],
        ["add", "c1", "--role", "user", "--content", "x", "-"],
        ["add", "c1", "x", "--role", "user", "--content", "x"],
        ["add", "c1", "-", "-", "--role", "user"],
        ["rename", "c1"], ["rename", "c1", "a", "b"], ["rename"],
        ["delete"], ["delete", "c1", "c2"], ["restore"],
        ["ls", "extra"], ["ls", "--limit", "abc"], ["ls", "--limit", "-1"],
        ["ls", "--cursor", "zz"], ["ls", "--cursor", "abc"], ["ls", "--json=1"],
        ["show"], ["show", "c1", "c1"], ["show", "c1", "--limit", "x"],
        ["show", "c1", "--after", "-5"],
        ["show", "c1", "--after", "9223372036854775808"],  # past int64
        ["show", "c1", "--after", "18446744073709551615"],
        ["show", "c1", "--after", "99999999999999999999"],
        ["search"], ["search", ""], ["search", "  "], ["search", "x", "--limit", "many"],
        ["search", "a b c d e f g h i j k l m n o p q"],
    ]
    for args in usage:
        fails(2, *args, root=root)
    r = run_cli("bogus", root=root)
    assert r.code == 2 and r.out == "" and "unknown command" in r.err, r
    assert journal_state(root) == before and tree(root) == paths, (journal_state(root), tree(root))

    # Help: exit 0 on stdout.
    for cmd in ["new", "add", "rename", "delete", "restore", "ls", "show", "search"]:
        r = run_cli("help", cmd, root=root)
        assert r.code == 0 and r.out.startswith("usage: jmirror ") and "Exit:" in r.out, r
        r2 = run_cli(cmd, "--help", root=root)
        assert r2.code == 0 and r2.out == r.out, r2
    r = run_cli("--help", root=root)
    for cmd in ["new", "add", "rename", "delete", "restore", "ls", "show", "search"]:
        assert re.search(r"^  %s +\S" % cmd, r.out, re.M), (cmd, r.out)

    # The conversation is as it was.
    sj = show_json(root, "c1")
    assert [m["content"] for m in sj["messages"]] == ["hello"]
    assert sj["conversation"]["bad_lines"] == 0


def read_after_write(root, rounds):
    """add, then at once show / ls / search in fresh processes."""
    cid = new(root, "--title", "ryw")
    for i in range(rounds):
        word = "zq%dword" % i
        mid = add(root, cid, "user" if i % 2 else "assistant", "round %d %s 한국어%d 👋" % (i, word, i))
        order = i % 3
        if order == 0:
            msgs = show_json(root, cid)["messages"]
            assert len(msgs) == i + 1 and msgs[-1]["id"] == mid, (i, msgs[-1:])
        elif order == 1:
            c = ls_json(root)["conversations"]
            assert c[0]["id"] == cid and c[0]["message_count"] == i + 1, (i, c)
        else:
            res = search_json(root, word)
            assert [r["message"] for r in res] == [mid], (i, res)
    # Every kind after one more write each.
    mid = add(root, cid, "user", "final 끝말 🏁")
    assert [r["message"] for r in search_json(root, "🏁")] == [mid]
    mid2 = add(root, cid, "user", "another 🏁")
    assert ls_json(root)["conversations"][0]["message_count"] == rounds + 2
    mid3 = add(root, cid, "user", "more")
    assert show_json(root, cid)["messages"][-1]["id"] == mid3
    # A raw append (any writer): the store commands see it too.
    ok("append", cid, json.dumps({"type": "message", "id": "raw1", "role": "user",
                                  "content": "raw 끼어들기"}), root=root)
    assert [r["message"] for r in search_json(root, "끼어들기")] == ["raw1"]
    ok("append", cid, json.dumps({"type": "conversation.updated", "title": "raw title"}), root=root)
    assert ls_json(root)["conversations"][0]["title"] == "raw title"
    return cid, mid2


def test_read_your_writes_without_daemon(tmp):
    root = os.path.join(tmp, "r")
    read_after_write(root, 30)
    # The commands took the writer lock only for a moment each.
    with open(harness.mirror_db(root) + ".lock", "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_read_your_writes_with_daemon(tmp):
    root = os.path.join(tmp, "r")
    os.makedirs(os.path.join(root, "journal"))
    d = harness.Daemon(root, binary=JMIRRORD)
    try:
        d.start()
        # Many rounds: jmirrord notices each write a little after it, and a
        # read that relied on that would lose the race now and then.
        cid, _ = read_after_write(root, 150)
        # The daemon did the ingesting: it still holds the lock, and says so.
        st = d.status()
        assert st.get("ok") and st.get("pid") == d.pid, st
        # Delete / restore are seen at once too.
        ok("delete", cid, root=root)
        assert ls_json(root)["conversations"] == []
        ok("restore", cid, root=root)
        assert ls_json(root)["conversations"][0]["id"] == cid
        assert d.alive()
    finally:
        if d.proc is not None:
            code, took = d.stop()
            assert code == 0, (code, d.log_text())


def test_search_cli(tmp):
    root = os.path.join(tmp, "r")
    new(root, "--id", "en")
    new(root, "--id", "ko")
    new(root, "--id", "gone")
    e1 = add(root, "en", "user", "The quick brown fox jumps over the lazy dog")
    e2 = add(root, "en", "assistant", "DATABASE database database")
    e3 = add(root, "en", "user", "a long sentence that mentions the database once among many other words")
    k1 = add(root, "ko", "user", "저는 한국어를 공부합니다")
    k2 = add(root, "ko", "assistant", "한국 음식 👋 최고")
    k3 = add(root, "ko", "user", "hello 👋 world 👨‍👩‍👧")
    g1 = add(root, "gone", "user", "a fox in a deleted conversation, 한국어 👋")
    s1 = add(root, "en", "user", 'say "hi" 50% off snake_case a\\b it\'s')
    ok("delete", "gone", root=root)

    def ids(*words, extra=()):
        return [r["message"] for r in search_json(root, *words, *extra)]

    # English: case-insensitive, AND, ranking.
    assert sorted(ids("QUICK")) == [e1]
    assert ids("quick", "fox") == [e1]
    assert ids("fox") == [e1]
    assert ids("database") == [e2, e3]
    assert ids("fox", "zebra") == []
    # Korean: a 3-syllable substring of a word, 2 syllables via the short path.
    assert ids("한국어") == [k1]
    assert sorted(ids("한국")) == sorted([k1, k2])
    assert ids("한국", "음식") == [k2]
    # Emoji alone and mixed.
    assert sorted(ids("👋")) == sorted([k2, k3])
    assert ids("hello", "👋") == [k3]
    assert ids("👨‍👩‍👧") == [k3]
    # Quote, LIKE wildcards, backslash: literal.
    for q in ['"', '"hi"', "%", "50%", "_", "e_c", "\\", "a\\b", "'", "it's"]:
        assert ids(q) == [s1], (q, ids(q))
    for q in ['"unterminated', "%%", "NEAR(", "*", "x OR"]:
        r = run_cli("search", q, "--json", root=root)
        assert r.code == 0 and json.loads(r.out)["results"] == [], (q, r)
    # Filters and options.
    assert ids("fox", extra=["--conversation", "en"]) == [e1]
    assert ids("fox", extra=["--conversation", "ko"]) == []
    assert sorted(ids("fox", extra=["--deleted"])) == sorted([e1, g1])
    assert sorted(ids("👋", extra=["--deleted"])) == sorted([k2, k3, g1])
    assert len(ids("a", extra=["--limit", "2"])) == 2
    # A huge limit costs only the rows there are (no allocation up front).
    for huge in ["1000000000000", "18446744073709551615"]:
        assert ids("database", extra=["--limit", huge]) == [e2, e3], huge
        assert sorted(ids("👋", extra=["--limit", huge])) == sorted([k2, k3])
    # Text output: one line per hit, [marks]; no match: exit 0, a note on stderr.
    r = run_cli("search", "한국어", root=root)
    assert r.code == 0 and r.err == "", r
    assert r.out == "ko #2 user: 저는 [한국어]를 공부합니다\n", r.out
    r = run_cli("search", "👋", "--conversation", "ko", root=root)
    assert r.code == 0 and r.out.count("\n") == 2 and "[👋]" in r.out, r
    r = run_cli("search", "nothing-like-this", root=root)
    assert r.code == 0 and r.out == "" and r.err == "no matches\n", r


def test_control_characters_never_reach_the_terminal(tmp):
    """Titles and content are the user's (or a model's) text: escape
    sequences in them are shown, not sent, and a newline in a title does
    not break an ls row.  --json keeps the exact text."""
    root = os.path.join(tmp, "root")
    title = "evil\x1b[2J\x1b]0;pwned\x07\nsecond line\u009b31m"
    cid = new(root, "--title", title)
    new(root, "--title", "plain")
    content = "needle \x1b[31mred\x1b[0m\nline two\ttab \x00 \x7f \u009d end"
    ok("add", cid, "--role", "user", "-", root=root, stdin=content)
    mid = "m\x1b[2J\nx"  # a message id is any text without NUL
    ok("add", cid, "--role", "assistant", "--content", "hi", "--id", mid,
       "--thinking", "think \x1b[5m", root=root)
    for args in (["ls"], ["show", cid], ["show", cid, "--thinking"],
                 ["search", "needle"]):
        out = ok(*args, root=root)
        bad = [ch for ch in out if (ord(ch) < 0x20 and ch not in "\n\t") or
               0x7f <= ord(ch) <= 0x9f]
        assert not bad, (args, out, bad)
        assert "^[[2J" in out or args[0] != "ls", (args, out)
    rows = ok("ls", root=root).splitlines()
    assert len(rows) == 2, rows
    assert "evil^[[2J^[]0;pwned^G second line<U+009B>31m" in rows[1] + rows[0], rows
    shown = ok("show", cid, root=root)
    assert "needle ^[[31mred^[[0m\n  line two\ttab ^@ ^? <U+009D> end" in shown, shown
    assert " m^[[2J x\n" in shown, shown  # the id on its one line
    hits = ok("search", "needle", root=root)
    assert "[needle] ^[[31mred^[[0m line two tab" in hits, hits
    # --json: the exact text, escaped as JSON
    assert ls_json(root)["conversations"][1]["title"] in (title, "plain")
    assert [c["title"] for c in ls_json(root)["conversations"]].count(title) == 1
    assert show_json(root, cid)["messages"][0]["content"] == content


def test_heal_through_cli(tmp):
    """The journal changed behind the mirror's back: show answers from the
    journal, not from the stale rows."""
    root = os.path.join(tmp, "r")
    new(root, "--id", "c")
    for i in range(5):
        add(root, "c", "user", "message %d" % i, "--id", "m%d" % i)
    assert len(show_json(root, "c")["messages"]) == 5
    path = os.path.join(root, "journal", "c.jsonl")
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    with open(path, "wb") as f:  # truncated to the first two messages
        f.write(b"\n".join(lines[:3]) + b"\n")
    assert [m["id"] for m in show_json(root, "c")["messages"]] == ["m0", "m1"]
    assert ls_json(root)["conversations"][0]["message_count"] == 2
    assert sorted(r["message"] for r in search_json(root, "message")) == ["m0", "m1"]
    os.unlink(path)
    fails(1, "show", "c", root=root)
    assert ls_json(root, "--deleted")["conversations"] == []


if __name__ == "__main__":
    run(globals())
