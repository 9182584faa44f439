-- 0002_listing: indexes behind `jmirror ls` / jm_store_list: newest first by
-- updated_at (NULL, for a file with no valid line, sorts as the oldest),
-- then id, for keyset pagination; and the same within one brain.
CREATE INDEX conversations_by_update
  ON conversations (coalesce(updated_at, '') DESC, id DESC);
CREATE INDEX conversations_by_brain
  ON conversations (brain, coalesce(updated_at, '') DESC, id DESC);
