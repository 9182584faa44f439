"""End-to-end tests of `jmirror append`."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from harness import run, run_cli  # noqa: E402


def test_append_one(tmp):
    r = run_cli("append", "c1", '{"type":"message","id":"m1","role":"user","content":"hi"}', root=tmp)
    assert r.code == 0, r
    data = open(os.path.join(tmp, "journal", "c1.jsonl"), "rb").read()
    assert data.endswith(b"\n") and data.count(b"\n") == 1, data


if __name__ == "__main__":
    run(globals())
