"""test_bench_smoke.py - the benchmark runs end to end (tools/bench/bench.py).

`bench.py --quick` on the programs of this build (a small corpus, one run,
short windows), into a scratch directory: it must exit 0 and write a JSON
with every figure, the machine, the versions, the corpus and the command.
No timing threshold is checked: the numbers of a quick run on a busy
machine mean nothing; that they are there, and numbers, is the test.
--update-docs is pointed at a scratch copy of the page: the table lands
between the markers and nothing outside them changes.
"""
import glob
import json
import os
import subprocess
import sys

from harness import run

BENCH = os.environ.get("JM_BENCH") or os.path.join(
    os.path.dirname(__file__), "..", "..", "tools", "bench", "bench.py")
BUILD = os.environ.get("JM_BUILD", "build")

FIGURES = ["rebuild", "replay_big", "latency", "catchup", "idle", "daemon_rss",
           "rebuild_rss", "writer", "store", "backup"]

# figure -> paths (dotted) that must hold a number
NUMBERS = {
    "rebuild": ["jmirror.rebuild_events_per_second.median", "jmirror.rebuild_seconds.median",
                "jmirror.search_index_seconds.median", "jmirror.peak_rss_kb.median",
                "baselines.ceiling_wal.ratio.median", "baselines.ceiling_off.ratio.median"],
    "replay_big": ["command_ms.median", "library_ms.median", "messages"],
    "latency": ["wait.p50_ms.median", "wait.p99_ms.median", "poll.p50_ms.median",
                "poll.p99_ms.median"],
    "catchup": ["files", "start_to_idle_ms.median", "reconcile_ms.median"],
    "idle": ["voluntary_ctxt_switches", "window_seconds", "threads"],
    "daemon_rss": ["events", "vmrss_kb", "vmhwm_kb"],
    "rebuild_rss": ["peak_rss_kb.median"],
    "writer": ["none.appends_per_second.median", "batch.appends_per_second.median",
               "always.appends_per_second.median"],
    "store": ["conversation_messages"],
    "backup": ["a_journal_changed_files_bytes", "b_sqlite_bytes", "c_jmirror_backup_bytes",
               "bytes_appended"],
}


def get(d, path):
    for k in path.split("."):
        assert isinstance(d, dict) and k in d, ("missing", path)
        d = d[k]
    return d


def is_number(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def test_quick_run_writes_every_figure(tmp):
    out = os.path.join(tmp, "out")
    docs = os.path.join(tmp, "performance.md")
    with open(docs, "w") as f:
        f.write("# Performance\n\nbefore\n\n<!-- bench:begin -->\nold table\n"
                "<!-- bench:end -->\n\nafter\n")
    p = subprocess.run([sys.executable, BENCH, "--quick", "--build", BUILD, "--out", out,
                        "--update-docs", "--docs", docs],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    text = p.stdout.decode("utf-8", "replace")
    assert p.returncode == 0, (p.returncode, text[-4000:])

    results = glob.glob(os.path.join(out, "results-*.json"))
    assert len(results) == 1, (results, text[-2000:])
    with open(os.path.join(out, "latest.json"), encoding="utf-8") as f:
        doc = json.load(f)
    with open(results[0], encoding="utf-8") as f:
        assert json.load(f) == doc

    for k in ("schema", "started", "finished", "command", "args", "machine", "versions",
              "corpora", "figures", "errors"):
        assert k in doc, ("missing", k)
    assert "--quick" in doc["command"] and "bench.py" in doc["command"]
    for k in ("cores", "kernel", "disk_free_bytes"):
        assert doc["machine"].get(k) is not None, ("machine", k)
    for k in ("sqlite", "libuv", "jansson", "python"):
        assert doc["versions"].get(k), ("versions", k)
    corpus = doc["corpora"]["small"]
    for k in ("conversations", "events", "bytes", "seed"):
        assert is_number(corpus[k]), ("corpus", k)
    assert corpus["conversations"] == 101 and corpus["seed"] == 42

    linux = os.path.isdir("/proc/self/task")
    for name in FIGURES:
        if name in doc["errors"]:
            # Only the /proc figures may be skipped, and only off Linux.
            assert not linux and doc["errors"][name].startswith("skipped"), \
                (name, doc["errors"][name])
            continue
        fig = doc["figures"][name]
        for path in NUMBERS[name]:
            assert is_number(get(fig, path)), (name, path, get(fig, path))

    # Baselines: measured, or said to be missing.
    for name in ("aiosqlite", "sqlite_utils", "ceiling_wal", "ceiling_off"):
        b = doc["figures"]["rebuild"]["baselines"][name]
        if b["available"]:
            assert is_number(b["ratio"]["median"]) and is_number(b["events_per_second"]["median"])
        else:
            assert b["note"] == "n/a (not installed)"
    store = doc["figures"]["store"]
    for side in ("without_daemon", "with_daemon"):
        ops = store[side]["ops"]
        assert [o["name"] for o in ops] == ["ls", "show"] + ["search"] * len(store["queries"])
        for o in ops:
            assert is_number(o["median_ms"]) and is_number(o["p99_ms"]) and o["reps"] >= 1
    assert store["with_daemon"]["daemon"] is True and store["without_daemon"]["daemon"] is False

    # The terminal table and the docs table.
    assert "Full rebuild" in text and "results: " in text
    with open(docs, encoding="utf-8") as f:
        page = f.read()
    assert page.startswith("# Performance\n\nbefore\n\n<!-- bench:begin -->\n")
    assert page.endswith("<!-- bench:end -->\n\nafter\n")
    assert "old table" not in page and "| Full rebuild" in page and "Quick run" in page

    # Nothing left behind but the results (corpora are not kept by default).
    assert sorted(os.listdir(out)) == sorted(["latest.json", os.path.basename(results[0])])


if __name__ == "__main__":
    run(globals())
