-- 0003_search: full-text search over message content.
--
-- FTS5 with the trigram tokenizer: it indexes every 3-character window, so
-- any substring of 3+ characters is found, whatever the script.  Korean,
-- Japanese and Chinese are not space-delimited (a Korean word carries its
-- particles: searching "한국어" must find "한국어를"), which word tokenizers
-- like unicode61 cannot do.  Shorter queries fall back to a scan (search.c).
--
-- External content: the text lives once, in messages.
--
-- The index is built incrementally.  settings.search_upto says that every
-- message with rowid <= search_upto is indexed; the triggers keep exactly
-- those rows in step (insert, content update, delete, cascading wipes), and
-- the builder (searchindex.c) indexes the rows above it in bounded slices,
-- then sets it to the largest integer: from then on every row is kept in
-- step.  A rebuilt mirror starts at 0, so its bulk load pays nothing for
-- the index and is usable at once; search stays complete meanwhile by
-- scanning the rows above the mark.
CREATE VIRTUAL TABLE messages_fts USING fts5(
  content,
  content = 'messages',
  content_rowid = 'rowid',
  tokenize = 'trigram'
);

INSERT INTO settings (key, value) VALUES ('search_upto', '0');

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages
  WHEN new.rowid <= (SELECT CAST(value AS INTEGER) FROM settings
                     WHERE key = 'search_upto') BEGIN
  INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages
  WHEN old.rowid <= (SELECT CAST(value AS INTEGER) FROM settings
                     WHERE key = 'search_upto') BEGIN
  INSERT INTO messages_fts (messages_fts, rowid, content)
    VALUES ('delete', old.rowid, old.content);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages
  WHEN old.content IS NOT new.content
   AND old.rowid <= (SELECT CAST(value AS INTEGER) FROM settings
                     WHERE key = 'search_upto') BEGIN
  INSERT INTO messages_fts (messages_fts, rowid, content)
    VALUES ('delete', old.rowid, old.content);
  INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;
