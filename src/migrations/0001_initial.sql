-- 0001_initial: the mirror's tables (docs/mirror.md explains every column).
-- Everything here is derived from journal/*.jsonl and can be rebuilt with
-- `jmirror replay --all`.

-- One row per journal file with a valid name, even one with no valid line.
CREATE TABLE conversations (
  id             TEXT PRIMARY KEY,   -- the file's conversation id
  title          TEXT,               -- last title set (NULL until set)
  brain          TEXT,
  meta           TEXT,               -- compact JSON text; JSON null -> NULL
  created_at     TEXT,               -- ts of the first valid line
  updated_at     TEXT,               -- greatest ts of any valid line
  deleted_at     TEXT,               -- set by conversation.deleted
  message_count  INTEGER NOT NULL DEFAULT 0,  -- messages currently present
  bad_lines      INTEGER NOT NULL DEFAULT 0,  -- lines that broke the format
  unknown_events INTEGER NOT NULL DEFAULT 0   -- valid lines of unknown type
);

-- One row per message currently present.  ORDER BY seq is conversation order.
CREATE TABLE messages (
  conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
  id              TEXT NOT NULL,     -- message id as written
  seq             INTEGER NOT NULL,  -- line number that created it (never changes)
  role            TEXT NOT NULL,     -- user | assistant | system | tool
  content         TEXT NOT NULL,
  parent_id       TEXT,              -- as written; healing is a read-time view
  brain           TEXT,
  reasoning_level TEXT,
  thinking        TEXT,
  meta            TEXT,              -- compact JSON text
  status          TEXT NOT NULL,     -- streaming | complete
  stop_reason     TEXT,
  usage           TEXT,              -- compact JSON text
  created_at      TEXT NOT NULL,     -- ts of the creating line (never changes)
  updated_at      TEXT NOT NULL,     -- greatest ts of the events effective on it
  edited_at       TEXT,              -- ts of the last message.edited
  UNIQUE (conversation_id, id)
);
CREATE UNIQUE INDEX messages_by_seq ON messages (conversation_id, seq);

-- How far each journal file has been ingested, and what it looked like,
-- so that a restart resumes exactly and a replaced file is noticed.
CREATE TABLE sources (
  conversation_id TEXT PRIMARY KEY REFERENCES conversations(id) ON DELETE CASCADE,
  byte_offset  INTEGER NOT NULL,  -- bytes ingested: just past the last LF
  lines        INTEGER NOT NULL,  -- physical lines ingested
  file_size    INTEGER NOT NULL,  -- size seen at the last ingest
  file_dev     INTEGER,           -- identity seen at the last ingest
  file_ino     INTEGER,
  file_mtime_ns INTEGER,
  head_hash    BLOB,              -- SHA-256 of the first line, cut at 4 KiB
  tail_hash    BLOB,              -- SHA-256 of the <= 4 KiB before byte_offset
  ingested_at  TEXT               -- wall-clock time of the last commit
);

-- Every bad line: where it is and why (docs/journal.md lists the reasons).
CREATE TABLE bad_lines (
  conversation_id TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
  line        INTEGER NOT NULL,   -- physical line number, from 1
  byte_offset INTEGER NOT NULL,   -- offset of the line's first byte
  reason      TEXT NOT NULL,      -- too_long, invalid_utf8, ...
  message     TEXT NOT NULL,      -- human-readable detail
  PRIMARY KEY (conversation_id, line)
) WITHOUT ROWID;

-- Settings the fold depends on (max_line).  A change means: replay.
CREATE TABLE settings (
  key   TEXT PRIMARY KEY,
  value TEXT NOT NULL
) WITHOUT ROWID;
