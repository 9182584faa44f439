/*
 * badline.c - reading facts back out of the mirror for the tools: the bad
 * lines it recorded (`jmirror errors`, in (conversation, line) order) and a
 * status summary for when no daemon runs (`jmirror status`).
 */
#include "mirror_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "migrate.h"

struct jm_bad_line_iter {
  jm_mirror *m;
  sqlite3_stmt *st; /* owned */
};

int jm_mirror_bad_lines(jm_mirror *m, const char *id, jm_bad_line_iter **out,
                        jm_error *err) {
  *out = NULL;
  int rc = id ? jm_id_check(id, strlen(id), err) : 0;
  if (rc)
    return rc;
  jm_bad_line_iter *it = calloc(1, sizeof *it);
  if (it == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  it->m = m;
  const char *sql =
      "SELECT conversation_id, line, byte_offset, reason, message"
      " FROM bad_lines WHERE ?1 IS NULL OR conversation_id = ?1"
      " ORDER BY conversation_id, line";
  if (sqlite3_prepare_v2(m->db, sql, -1, &it->st, NULL) != SQLITE_OK) {
    rc = jm__sql_err(m, err, "cannot list bad lines");
    free(it);
    return rc;
  }
  if (id)
    sqlite3_bind_text(it->st, 1, id, -1, SQLITE_TRANSIENT);
  *out = it;
  return 0;
}

int jm_bad_line_next(jm_bad_line_iter *it, jm_bad_line *out) {
  int s = sqlite3_step(it->st);
  if (s == SQLITE_DONE)
    return 0;
  if (s != SQLITE_ROW)
    return JM_ESQLITE;
  out->conversation_id = (const char *)sqlite3_column_text(it->st, 0);
  out->line = (uint64_t)sqlite3_column_int64(it->st, 1);
  out->offset = (uint64_t)sqlite3_column_int64(it->st, 2);
  out->reason = (const char *)sqlite3_column_text(it->st, 3);
  out->message = (const char *)sqlite3_column_text(it->st, 4);
  return 1;
}

void jm_bad_line_iter_free(jm_bad_line_iter *it) {
  if (it == NULL)
    return;
  sqlite3_finalize(it->st);
  free(it);
}

/* Status without a daemon ---------------------------------------------------- */

typedef struct behind_ctx {
  jm_mirror *m;
  sqlite3_stmt *st;
  jm_mirror_status *out;
} behind_ctx;

static int add_behind(void *ctx, const char *id) {
  behind_ctx *b = ctx;
  char *path = jm_journal_path(b->m->root, id);
  struct stat sb;
  int have = path && lstat(path, &sb) == 0;
  free(path);
  b->out->files++;
  if (!have)
    return 0;
  sqlite3_reset(b->st);
  sqlite3_bind_text(b->st, 1, id, -1, SQLITE_STATIC);
  uint64_t off = 0;
  if (sqlite3_step(b->st) == SQLITE_ROW)
    off = (uint64_t)sqlite3_column_int64(b->st, 0);
  if ((uint64_t)sb.st_size > off)
    b->out->bytes_behind += (uint64_t)sb.st_size - off;
  return 0;
}

int jm_mirror_status_read(jm_mirror *m, jm_mirror_status *out,
                          jm_error *err) {
  memset(out, 0, sizeof *out);
  sqlite3_stmt *st;
  const char *sql =
      "SELECT count(*), coalesce(sum(message_count), 0),"
      " coalesce(sum(bad_lines), 0),"
      " (SELECT count(*) FROM conversations WHERE deleted_at IS NOT NULL)"
      " FROM conversations";
  if (sqlite3_prepare_v2(m->db, sql, -1, &st, NULL) != SQLITE_OK)
    return jm__sql_err(m, err, "cannot read status");
  if (sqlite3_step(st) == SQLITE_ROW) {
    out->conversations = (uint64_t)sqlite3_column_int64(st, 0);
    out->messages = (uint64_t)sqlite3_column_int64(st, 1);
    out->bad_lines = (uint64_t)sqlite3_column_int64(st, 2);
    out->deleted_conversations = (uint64_t)sqlite3_column_int64(st, 3);
  }
  sqlite3_finalize(st);
  behind_ctx b = {m, NULL, out};
  if (sqlite3_prepare_v2(m->db,
                         "SELECT byte_offset FROM sources WHERE "
                         "conversation_id = ?1",
                         -1, &b.st, NULL) != SQLITE_OK)
    return jm__sql_err(m, err, "cannot read status");
  int rc = jm_journal_scan(m->root, add_behind, &b, &out->ignored_files, err);
  sqlite3_finalize(b.st);
  if (rc == -ENOENT) {
    out->journal_missing = 1;
    jm_error_clear(err);
    rc = 0;
  }
  out->schema_version = jm__schema_version(m->db);
  return rc;
}
