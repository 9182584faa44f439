-- 0003_search: full-text search over message content.
--
-- FTS5 with the trigram tokenizer: it indexes every 3-character window, so
-- any substring of 3+ characters is found, whatever the script.  Korean,
-- Japanese and Chinese are not space-delimited (a Korean word carries its
-- particles: searching "한국어" must find "한국어를"), which word tokenizers
-- like unicode61 cannot do.  Shorter queries fall back to a scan (store.c).
--
-- External content (the text lives once, in messages); triggers keep the
-- index in step with every insert, update of content and delete the fold
-- makes, including the cascading deletes of a wipe.
CREATE VIRTUAL TABLE messages_fts USING fts5(
  content,
  content = 'messages',
  content_rowid = 'rowid',
  tokenize = 'trigram'
);

CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
  INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;

CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
  INSERT INTO messages_fts (messages_fts, rowid, content)
    VALUES ('delete', old.rowid, old.content);
END;

CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages
  WHEN old.content IS NOT new.content BEGIN
  INSERT INTO messages_fts (messages_fts, rowid, content)
    VALUES ('delete', old.rowid, old.content);
  INSERT INTO messages_fts (rowid, content) VALUES (new.rowid, new.content);
END;

-- A mirror upgraded from 0002 already has messages: index them.
INSERT INTO messages_fts (messages_fts) VALUES ('rebuild');
