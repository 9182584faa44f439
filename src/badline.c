/*
 * badline.c - reading back the bad lines the mirror recorded
 * (`jmirror errors`).  Rows come out in (conversation, line) order.
 */
#include "mirror_int.h"

#include <errno.h>
#include <stdlib.h>

struct jm_bad_line_iter {
  jm_mirror *m;
  sqlite3_stmt *st; /* owned */
};

int jm_mirror_bad_lines(jm_mirror *m, const char *id, jm_bad_line_iter **out,
                        jm_error *err) {
  *out = NULL;
  jm_bad_line_iter *it = calloc(1, sizeof *it);
  if (it == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  it->m = m;
  const char *sql =
      "SELECT conversation_id, line, byte_offset, reason, message"
      " FROM bad_lines WHERE ?1 IS NULL OR conversation_id = ?1"
      " ORDER BY conversation_id, line";
  if (sqlite3_prepare_v2(m->db, sql, -1, &it->st, NULL) != SQLITE_OK) {
    int rc = jm__sql_err(m, err, "cannot list bad lines");
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
