"""jmirrord under valgrind: no memory errors, no leaks at exit (SIGTERM).

Skipped in sanitizer builds (valgrind and ASan do not mix) and where
valgrind is not installed.  The daemon does real work first: catch-up,
live appends, control requests (status, wait, verify, replay --all), so
that the paths that allocate are the ones checked.
"""
import os
import re
import shutil
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import JMIRRORD, Control, run, run_cli, wait_rows, wait_until  # noqa: E402

SKIP = None
if os.environ.get("JM_SANITIZED", "none") not in ("", "none"):
    SKIP = "sanitizer build"
elif shutil.which("valgrind") is None:
    SKIP = "valgrind not installed"


def msg(i):
    return '{"type":"message","id":"m%d","role":"user","content":"hello %d 한국어"}' % (i, i)


def test_daemon_no_leaks(tmp):
    if SKIP:
        print("# skipped: " + SKIP)
        return
    root = os.path.join(tmp, "root")
    for i in range(20):
        assert run_cli("append", "pre%d" % (i % 4), msg(i), root=root).code == 0
    vlog = os.path.join(tmp, "valgrind.log")
    dlog = open(os.path.join(tmp, "daemon.log"), "wb")
    p = subprocess.Popen(
        ["valgrind", "--leak-check=full", "--show-leak-kinds=definite,indirect",
         "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
         "--log-file=" + vlog, JMIRRORD, "--root", root],
        stdout=dlog, stderr=dlog, stdin=subprocess.DEVNULL)
    sock = os.path.join(root, "mirror", "mirror.db.sock")
    try:
        def answers():
            if p.poll() is not None:
                raise AssertionError("daemon exited: %s\n%s" % (p.returncode, open(vlog).read()))
            try:
                with Control(sock, 5.0) as c:
                    return c.request({"cmd": "status"}).get("ok")
            except (OSError, ValueError):
                return None
        wait_until(answers, 120, "jmirrord under valgrind to answer")
        wait_rows(root, 20, timeout=120)
        for i in range(20, 40):
            assert run_cli("append", "live%d" % (i % 3), msg(i), root=root).code == 0
        wait_rows(root, 40, timeout=120)
        with Control(sock, 120.0) as c:
            assert c.request({"cmd": "wait", "id": "live0", "offset": 1,
                              "timeout_ms": 60000})["ok"]
            assert c.request({"cmd": "verify"})["ok"]
            assert c.request({"cmd": "replay", "all": True})["ok"]
            assert c.request({"cmd": "nonsense"})["ok"] is False
        p.send_signal(signal.SIGTERM)
        code = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        dlog.close()
    text = open(vlog).read()
    for line in text.splitlines():  # the evidence, in the test log
        if re.search(r"(ERROR SUMMARY|definitely lost|indirectly lost|in use at exit)", line):
            print("# " + line)
    assert code == 0, "exit %s\n%s" % (code, text)
    assert "ERROR SUMMARY: 0 errors" in text, text
    for kind in ("definitely", "indirectly"):
        m = re.search(kind + r" lost: ([\d,]+) bytes", text)
        assert m is None or m.group(1) == "0", text


if __name__ == "__main__":
    run(globals())
