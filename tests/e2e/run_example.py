"""Run docs/examples/store_example on a fresh root and check what it prints."""
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
from harness import run  # noqa: E402

EXAMPLE = sys.argv.pop(1)


def test_store_example(tmp):
    root = os.path.join(tmp, "demo root é")
    p = subprocess.run([EXAMPLE, root], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=60)
    out = p.stdout.decode()
    assert p.returncode == 0, (p.returncode, out, p.stderr.decode())
    assert "Trip planning (2 messages)" in out, out
    assert "#2 user: 서울에서 3일 일정을 짜줘" in out, out
    assert "#3 assistant: Day 1:" in out, out
    assert "[일정]" in out, out
    assert "after delete: 0 conversations listed" in out, out
    assert os.path.getsize(os.path.join(root, "journal", os.listdir(os.path.join(root, "journal"))[0])) > 0


if __name__ == "__main__":
    run(globals())
