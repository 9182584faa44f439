#!/usr/bin/env python3
"""baseline_aiosqlite.py - the design jmirror replaces, as a benchmark baseline.

usage: baseline_aiosqlite.py ROOT DB

The seed system: a Python app (FastAPI + aiosqlite) whose recovery is, per
conversation, purge its rows and replay its JSONL with parameterized
statements, one commit per conversation.  This does exactly that over every
file in ROOT/journal into DB (the conversations/messages tables with the
same columns and indexes as jmirror's mirror, no full-text index): each
file is folded in Python memory, then its rows go in with executemany.  It
validates nothing beyond json.loads, so it is a generous baseline.
Prints "conversations events seconds".
"""
import asyncio
import json
import os
import sys
import time

import aiosqlite

SCHEMA = """
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS conversations (
  id TEXT PRIMARY KEY, title TEXT, brain TEXT, meta TEXT, created_at TEXT,
  updated_at TEXT, deleted_at TEXT, message_count INTEGER NOT NULL DEFAULT 0,
  bad_lines INTEGER NOT NULL DEFAULT 0, unknown_events INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS messages (
  conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
  id TEXT NOT NULL, seq INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL,
  parent_id TEXT, brain TEXT, reasoning_level TEXT, thinking TEXT, meta TEXT,
  status TEXT NOT NULL, stop_reason TEXT, usage TEXT, created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL, edited_at TEXT, UNIQUE (conversation_id, id));
CREATE INDEX IF NOT EXISTS messages_by_seq ON messages (conversation_id, seq);
"""


def dumps(v):
    return None if v is None else json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def fold(cid, path):
    """Fold one file in memory: the conversation row and its message rows."""
    conv = {"title": None, "brain": None, "meta": None, "created_at": None,
            "updated_at": None, "deleted_at": None}
    msgs = {}
    events = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            events += 1
            t, ts = ev.get("type"), ev.get("ts")
            conv["created_at"] = conv["created_at"] or ts
            conv["updated_at"] = max(conv["updated_at"] or "", ts or "")
            if t in ("conversation.created", "conversation.updated"):
                for k in ("title", "brain", "meta"):
                    if k in ev:
                        conv[k] = dumps(ev[k]) if k == "meta" else ev[k]
            elif t == "conversation.deleted":
                conv["deleted_at"] = ts
            elif t == "conversation.restored":
                conv["deleted_at"] = None
            elif t in ("message", "message.delta"):
                m = msgs.get(ev["id"])
                if m is None:
                    m = msgs[ev["id"]] = {"seq": lineno, "role": ev.get("role") or "assistant",
                                          "content": "", "parent_id": ev.get("parent_id"),
                                          "thinking": None, "meta": None, "status": "streaming",
                                          "stop_reason": None, "usage": None, "created_at": ts,
                                          "updated_at": ts, "edited_at": None}
                if t == "message":
                    m.update(role=ev["role"], content=ev["content"], status="complete")
                    if "meta" in ev:
                        m["meta"] = dumps(ev["meta"])
                else:
                    m["content"] += ev.get("text") or ""
                    if ev.get("thinking") is not None:
                        m["thinking"] = (m["thinking"] or "") + ev["thinking"]
                m["updated_at"] = max(m["updated_at"], ts)
            elif ev.get("id") in msgs:
                m = msgs[ev["id"]]
                if t == "message.end":
                    m.update(status="complete", stop_reason=ev.get("stop_reason"),
                             usage=dumps(ev.get("usage")))
                elif t == "message.edited":
                    m.update(content=ev["content"], edited_at=ts)
                elif t == "message.deleted":
                    del msgs[ev["id"]]
                    continue
                m["updated_at"] = max(m["updated_at"], ts)
    return conv, msgs, events


async def replay(db, cid, path):
    """Purge the conversation's rows, then insert its folded rows."""
    conv, msgs, events = fold(cid, path)
    await db.execute("DELETE FROM conversations WHERE id = ?", (cid,))
    await db.execute(
        "INSERT INTO conversations (id, title, brain, meta, created_at, updated_at,"
        " deleted_at, message_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (cid, conv["title"], conv["brain"], conv["meta"], conv["created_at"],
         conv["updated_at"], conv["deleted_at"], len(msgs)))
    await db.executemany(
        "INSERT INTO messages (conversation_id, id, seq, role, content, parent_id, thinking,"
        " meta, status, stop_reason, usage, created_at, updated_at, edited_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(cid, mid, m["seq"], m["role"], m["content"], m["parent_id"], m["thinking"],
          m["meta"], m["status"], m["stop_reason"], m["usage"], m["created_at"],
          m["updated_at"], m["edited_at"]) for mid, m in msgs.items()])
    await db.commit()
    return events


async def main(root, path):
    jdir = os.path.join(root, "journal")
    names = sorted(n for n in os.listdir(jdir) if n.endswith(".jsonl"))
    t0 = time.monotonic()
    events = 0
    async with aiosqlite.connect(path) as db:
        await db.executescript(SCHEMA)
        for n in names:
            events += await replay(db, n[:-6], os.path.join(jdir, n))
    print(len(names), events, f"{time.monotonic() - t0:.3f}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
