/*
 * searchindex.c - building the full-text index incrementally.
 *
 * Invariant (migration 0003): every message with rowid <= search_upto is in
 * messages_fts, and the triggers keep those rows in step.  A step indexes
 * the next rows above the mark (in rowid order, at most max_rows) and moves
 * the mark, in one transaction; when no row is left above it, the mark
 * becomes the largest integer and the triggers cover every future row.
 * Rows above the mark may be inserted, updated or deleted meanwhile: the
 * triggers ignore them and the builder picks up whatever they are when it
 * gets there.  A crash loses at most the current step.
 *
 * A build from nothing (a rebuilt mirror: the mark at 0) turns FTS5's
 * automerge off until the last step: each step commits one segment and
 * FTS5 would otherwise merge those segments again and again as they pile
 * up (crisis merges still bound their number).  That cut the index of the
 * medium benchmark corpus from 36.4 s to 27.2 s of CPU at the same memory.
 * The last step sets automerge back to FTS5's default, so later writes
 * merge the segments a little at a time.  A crash midway leaves it off
 * until the build, resumed, completes.
 */
#include "mirror_int.h"

#include <errno.h>
#include <stdlib.h>

#define ALL "9223372036854775807"

int jm__search_upto(jm_mirror *m, int64_t *upto) {
  sqlite3_stmt *st;
  *upto = INT64_MAX;
  if (sqlite3_prepare_v2(m->db,
                         "SELECT CAST(value AS INTEGER) FROM settings WHERE "
                         "key = 'search_upto'",
                         -1, &st, NULL) != SQLITE_OK)
    return JM_ESQLITE;
  if (sqlite3_step(st) == SQLITE_ROW)
    *upto = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return 0;
}

static int64_t max_rowid(jm_mirror *m) {
  sqlite3_stmt *st;
  int64_t r = 0;
  if (sqlite3_prepare_v2(m->db, "SELECT coalesce(max(rowid), 0) FROM messages",
                         -1, &st, NULL) != SQLITE_OK)
    return 0;
  if (sqlite3_step(st) == SQLITE_ROW)
    r = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return r;
}

/* FTS5's automerge: 0 while a build from nothing runs, the default (4)
 * otherwise. */
static int set_automerge(jm_mirror *m, int on, jm_error *err) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(m->db,
                         "INSERT INTO messages_fts (messages_fts, rank) "
                         "VALUES ('automerge', ?1)",
                         -1, &st, NULL) != SQLITE_OK)
    return jm__sql_err(m, err, "cannot configure the search index");
  sqlite3_bind_int(st, 1, on ? 4 : 0);
  int rc = sqlite3_step(st) == SQLITE_DONE
               ? 0
               : jm__sql_err(m, err, "cannot configure the search index");
  sqlite3_finalize(st);
  return rc;
}

/* Index rows (upto, next] and set the mark to next, or to ALL at the end. */
static int step_locked(jm_mirror *m, int64_t upto, size_t max_rows,
                       jm_search_progress *p, jm_error *err) {
  sqlite3_stmt *st = NULL;
  int64_t next = upto;
  int rc = 0;
  if (sqlite3_prepare_v2(m->db,
                         "SELECT max(rowid) FROM (SELECT rowid FROM messages "
                         "WHERE rowid > ?1 ORDER BY rowid LIMIT ?2)",
                         -1, &st, NULL) != SQLITE_OK)
    return jm__sql_err(m, err, "cannot plan the search index");
  sqlite3_bind_int64(st, 1, upto);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)max_rows);
  if (sqlite3_step(st) == SQLITE_ROW &&
      sqlite3_column_type(st, 0) != SQLITE_NULL)
    next = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  if (upto == 0 && next > upto && (rc = set_automerge(m, 0, err)) != 0)
    return rc;
  if (next > upto) {
    if (sqlite3_prepare_v2(m->db,
                           "INSERT INTO messages_fts (rowid, content) SELECT "
                           "rowid, content FROM messages WHERE rowid > ?1 AND "
                           "rowid <= ?2",
                           -1, &st, NULL) != SQLITE_OK)
      return jm__sql_err(m, err, "cannot build the search index");
    sqlite3_bind_int64(st, 1, upto);
    sqlite3_bind_int64(st, 2, next);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = jm__sql_err(m, err, "cannot build the search index");
    sqlite3_finalize(st);
  }
  p->done = next == upto; /* nothing above the mark: complete */
  if (rc == 0 && p->done)
    rc = set_automerge(m, 1, err);
  if (rc == 0 &&
      sqlite3_prepare_v2(m->db,
                         "UPDATE settings SET value = ?1 WHERE key = "
                         "'search_upto'",
                         -1, &st, NULL) == SQLITE_OK) {
    if (p->done)
      sqlite3_bind_text(st, 1, ALL, -1, SQLITE_STATIC);
    else
      sqlite3_bind_int64(st, 1, next);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = jm__sql_err(m, err, "cannot record search index progress");
    sqlite3_finalize(st);
  }
  p->upto = p->done ? INT64_MAX : next;
  return rc;
}

int jm_mirror_index_step(jm_mirror *m, size_t max_rows, jm_search_progress *p,
                         jm_error *err) {
  jm_search_progress tmp;
  if (p == NULL)
    p = &tmp;
  p->done = 0;
  if (!jm_mirror_locked(m))
    return jm__errf(err, JM_EUSAGE,
                    "building the search index needs the writer lock");
  int64_t upto;
  if (jm__search_upto(m, &upto) != 0)
    return jm__sql_err(m, err, "cannot read search index state");
  p->upto = upto;
  p->max_rowid = max_rowid(m);
  if (upto == INT64_MAX) {
    p->done = 1;
    return 0;
  }
  int rc = jm__exec(m, "BEGIN IMMEDIATE", err);
  if (rc)
    return rc;
  rc = step_locked(m, upto, max_rows ? max_rows : 2000, p, err);
  if (rc == 0)
    return jm__exec(m, "COMMIT", err);
  jm__exec(m, "ROLLBACK", NULL);
  return rc;
}

int jm_mirror_index_defer(jm_mirror *m, jm_error *err) {
  if (!jm_mirror_locked(m))
    return jm__errf(err, JM_EUSAGE,
                    "deferring the search index needs the writer lock");
  /* Rows up to the largest rowid stay indexed; rows added from now on are
   * left to the builder: the invariant holds, search scans them meanwhile. */
  int rc = jm__exec(m,
                    "UPDATE settings SET value = (SELECT coalesce(max(rowid),"
                    " 0) FROM messages) WHERE key = 'search_upto' AND value ="
                    " '" ALL "'",
                    err);
  return rc ? rc : sqlite3_changes(m->db) > 0;
}
