/*
 * store_read.c - reading conversations and messages out of the mirror.
 *
 * Listing is newest first by (updated_at, id) with keyset pagination: the
 * cursor is the (updated_at, id) of the last row returned, hex-encoded so
 * callers treat it as opaque.  Rows added while a caller pages are newer,
 * so they land before the cursor and never shift the pages behind it: no
 * duplicates, no gaps among the conversations that existed.
 *
 * Messages come in seq order, paged by "after seq", each with its healed
 * parent (spec section 4): a parent_id naming no present message of the
 * conversation, or the message itself, is shown as the previous message in
 * seq order (NULL for the first); the stored value is kept beside it.
 */
#include "store_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

char *jm__col_dup(sqlite3_stmt *st, int col, size_t *len, int *oom) {
  if (len)
    *len = 0;
  if (sqlite3_column_type(st, col) == SQLITE_NULL)
    return NULL;
  const void *p = sqlite3_column_blob(st, col);
  size_t n = (size_t)sqlite3_column_bytes(st, col);
  char *d = jm__strndup(p ? p : "", n);
  if (d == NULL)
    *oom = 1;
  if (len)
    *len = n;
  return d;
}

static sqlite3_stmt *prepare(jm_store *s, const char *sql, jm_error *err) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(s->m->db, sql, -1, &st, NULL) != SQLITE_OK) {
    jm__sql_err(s->m, err, "cannot query the mirror");
    return NULL;
  }
  return st;
}

/* Step to the end, converting SQLite's verdict into ours. */
static int step_err(jm_store *s, int rc, jm_error *err) {
  if (rc == SQLITE_DONE || rc == SQLITE_ROW)
    return 0;
  if ((rc & 0xff) == SQLITE_CORRUPT || (rc & 0xff) == SQLITE_NOTADB)
    return jm__errf(err, JM_ECORRUPT,
                    "mirror '%s' is corrupt: rebuild it with 'jmirror "
                    "replay --all'", s->m->db_path);
  return jm__sql_err(s->m, err, "cannot read the mirror");
}

/* Conversations ------------------------------------------------------------------ */

#define CONV_COLS                                                             \
  "id, title, brain, meta, created_at, updated_at, deleted_at,"              \
  " message_count, bad_lines, unknown_events"

static int read_conv(sqlite3_stmt *st, jm_conversation *c) {
  int oom = 0;
  memset(c, 0, sizeof *c);
  c->id = jm__col_dup(st, 0, NULL, &oom);
  c->title = jm__col_dup(st, 1, NULL, &oom);
  c->brain = jm__col_dup(st, 2, NULL, &oom);
  c->meta = jm__col_dup(st, 3, NULL, &oom);
  c->created_at = jm__col_dup(st, 4, NULL, &oom);
  c->updated_at = jm__col_dup(st, 5, NULL, &oom);
  c->deleted_at = jm__col_dup(st, 6, NULL, &oom);
  c->message_count = sqlite3_column_int64(st, 7);
  c->bad_lines = sqlite3_column_int64(st, 8);
  c->unknown_events = sqlite3_column_int64(st, 9);
  return oom ? -ENOMEM : 0;
}

void jm_conversation_free(jm_conversation *c) {
  if (c == NULL)
    return;
  free(c->id);
  free(c->title);
  free(c->brain);
  free(c->meta);
  free(c->created_at);
  free(c->updated_at);
  free(c->deleted_at);
  memset(c, 0, sizeof *c);
}

void jm_conversation_list_free(jm_conversation_list *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++)
    jm_conversation_free(&l->items[i]);
  free(l->items);
  free(l->next_cursor);
  memset(l, 0, sizeof *l);
}

int jm_store_get(jm_store *s, const char *id, jm_conversation *out,
                 jm_error *err) {
  memset(out, 0, sizeof *out);
  int rc = jm_id_check(id, strlen(id), err);
  if (rc == 0)
    rc = jm__store_current(s, id, err);
  if (rc != 0)
    return rc;
  sqlite3_stmt *st = prepare(s, "SELECT " CONV_COLS
                                " FROM conversations WHERE id = ?1", err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int r = sqlite3_step(st);
  if (r == SQLITE_ROW)
    rc = read_conv(st, out) ? jm__errf(err, -ENOMEM, "out of memory") : 0;
  else if (r == SQLITE_DONE)
    rc = jm__errf(err, JM_ENOTFOUND, "no conversation '%s'", id);
  else
    rc = step_err(s, r, err);
  sqlite3_finalize(st);
  return rc;
}

/* The cursor: hex of "<updated_at>\x1f<id>". */
static char *cursor_make(const char *updated_at, const char *id) {
  static const char hex[] = "0123456789abcdef";
  char *raw = jm__asprintf("%s\x1f%s", updated_at ? updated_at : "", id);
  if (raw == NULL)
    return NULL;
  size_t n = strlen(raw);
  char *c = malloc(2 * n + 1);
  for (size_t i = 0; c && i < n; i++) {
    c[2 * i] = hex[(unsigned char)raw[i] >> 4];
    c[2 * i + 1] = hex[(unsigned char)raw[i] & 15];
  }
  if (c)
    c[2 * n] = '\0';
  free(raw);
  return c;
}

static int hexval(char c) {
  return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                                                : -1;
}

/* Split a cursor into its two keys (malloc'd raw buffer, pointers in it). */
static int cursor_parse(const char *cur, char **buf, const char **upd,
                        const char **id) {
  size_t n = strlen(cur);
  if (n == 0 || n % 2 || n > 1024)
    return -1;
  char *b = malloc(n / 2 + 1);
  if (b == NULL)
    return -1;
  for (size_t i = 0; i < n / 2; i++) {
    int hi = hexval(cur[2 * i]), lo = hexval(cur[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      free(b);
      return -1;
    }
    b[i] = (char)(hi << 4 | lo);
  }
  b[n / 2] = '\0';
  char *sep = memchr(b, '\x1f', n / 2);
  if (sep == NULL || jm_id_check(sep + 1, strlen(sep + 1), NULL) != 0) {
    free(b);
    return -1;
  }
  *sep = '\0';
  *buf = b;
  *upd = b;
  *id = sep + 1;
  return 0;
}

static const char *list_sql(int brain, int cursor) {
  /* Four fixed texts, so each variant can use its index. */
  static const char *const sql[4] = {
    "SELECT " CONV_COLS " FROM conversations WHERE (?2 OR deleted_at IS NULL)"
    " ORDER BY coalesce(updated_at, '') DESC, id DESC LIMIT ?5",
    "SELECT " CONV_COLS " FROM conversations WHERE (?2 OR deleted_at IS NULL)"
    " AND (coalesce(updated_at, ''), id) < (?3, ?4)"
    " ORDER BY coalesce(updated_at, '') DESC, id DESC LIMIT ?5",
    "SELECT " CONV_COLS " FROM conversations WHERE brain = ?1 AND"
    " (?2 OR deleted_at IS NULL)"
    " ORDER BY coalesce(updated_at, '') DESC, id DESC LIMIT ?5",
    "SELECT " CONV_COLS " FROM conversations WHERE brain = ?1 AND"
    " (?2 OR deleted_at IS NULL) AND (coalesce(updated_at, ''), id) < (?3, ?4)"
    " ORDER BY coalesce(updated_at, '') DESC, id DESC LIMIT ?5",
  };
  return sql[(brain ? 2 : 0) + (cursor ? 1 : 0)];
}

static int list_rows(jm_store *s, sqlite3_stmt *st, size_t limit,
                     jm_conversation_list *out, jm_error *err) {
  out->items = calloc(limit, sizeof *out->items);
  if (out->items == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  int r, more = 0;
  while ((r = sqlite3_step(st)) == SQLITE_ROW) {
    if (out->n == limit) {
      more = 1; /* the extra row: a next page exists */
      break;
    }
    if (read_conv(st, &out->items[out->n++]) != 0)
      return jm__errf(err, -ENOMEM, "out of memory");
  }
  if (r != SQLITE_ROW && r != SQLITE_DONE)
    return step_err(s, r, err);
  if (more && out->n > 0) {
    jm_conversation *last = &out->items[out->n - 1];
    out->next_cursor = cursor_make(last->updated_at, last->id);
    if (out->next_cursor == NULL)
      return jm__errf(err, -ENOMEM, "out of memory");
  }
  return 0;
}

int jm_store_list(jm_store *s, const jm_list_options *opt,
                  jm_conversation_list *out, jm_error *err) {
  memset(out, 0, sizeof *out);
  jm_list_options o = {0};
  if (opt)
    o = *opt;
  size_t limit = o.limit ? o.limit : 50;
  if (limit > 100000)
    limit = 100000;
  char *cbuf = NULL;
  const char *cupd = NULL, *cid = NULL;
  if (o.cursor && cursor_parse(o.cursor, &cbuf, &cupd, &cid) != 0)
    return jm__errf(err, JM_EUSAGE, "invalid cursor '%.40s'", o.cursor);
  int rc = jm__store_flush_written(s, err);
  sqlite3_stmt *st = rc ? NULL
                        : prepare(s, list_sql(o.brain != NULL, cbuf != NULL),
                                  err);
  if (rc == 0 && st == NULL)
    rc = JM_ESQLITE;
  if (rc == 0) {
    if (o.brain)
      sqlite3_bind_text(st, 1, o.brain, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, o.include_deleted != 0);
    if (cbuf) {
      sqlite3_bind_text(st, 3, cupd, -1, SQLITE_STATIC);
      sqlite3_bind_text(st, 4, cid, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 5, (sqlite3_int64)limit + 1);
    rc = list_rows(s, st, limit, out, err);
  }
  sqlite3_finalize(st);
  free(cbuf);
  if (rc != 0)
    jm_conversation_list_free(out);
  return rc;
}

/* Messages ------------------------------------------------------------------------ */

static const char messages_sql[] =
  "SELECT m.id, m.seq, m.role, m.content,"
  " CASE WHEN m.parent_id IS NULL THEN NULL"
  "  WHEN m.parent_id IS NOT m.id AND EXISTS (SELECT 1 FROM messages p"
  "   WHERE p.conversation_id = m.conversation_id AND p.id = m.parent_id)"
  "   THEN m.parent_id"
  "  ELSE (SELECT p.id FROM messages p WHERE p.conversation_id ="
  "   m.conversation_id AND p.seq < m.seq ORDER BY p.seq DESC LIMIT 1) END,"
  " m.parent_id, m.brain, m.reasoning_level, m.meta, m.thinking, m.status,"
  " m.stop_reason, m.usage, m.created_at, m.updated_at, m.edited_at"
  " FROM messages m WHERE m.conversation_id = ?1 AND m.seq > ?2"
  " ORDER BY m.seq LIMIT ?3";

static int read_msg(sqlite3_stmt *st, jm_message *m) {
  int oom = 0;
  memset(m, 0, sizeof *m);
  m->id = jm__col_dup(st, 0, NULL, &oom);
  m->seq = sqlite3_column_int64(st, 1);
  m->role = jm__col_dup(st, 2, NULL, &oom);
  m->content = jm__col_dup(st, 3, &m->content_len, &oom);
  m->parent_id = jm__col_dup(st, 4, NULL, &oom);
  m->parent_id_written = jm__col_dup(st, 5, NULL, &oom);
  m->brain = jm__col_dup(st, 6, NULL, &oom);
  m->reasoning_level = jm__col_dup(st, 7, NULL, &oom);
  m->meta = jm__col_dup(st, 8, NULL, &oom);
  m->thinking = jm__col_dup(st, 9, &m->thinking_len, &oom);
  m->status = jm__col_dup(st, 10, NULL, &oom);
  m->stop_reason = jm__col_dup(st, 11, NULL, &oom);
  m->usage = jm__col_dup(st, 12, NULL, &oom);
  m->created_at = jm__col_dup(st, 13, NULL, &oom);
  m->updated_at = jm__col_dup(st, 14, NULL, &oom);
  m->edited_at = jm__col_dup(st, 15, NULL, &oom);
  if (m->content == NULL && !oom)
    m->content = jm__strdup(""); /* never NULL for a caller */
  return oom ? -ENOMEM : 0;
}

static void msg_free(jm_message *m) {
  char *const f[] = {m->id, m->role, m->content, m->parent_id,
                     m->parent_id_written, m->brain, m->reasoning_level,
                     m->meta, m->thinking, m->status, m->stop_reason,
                     m->usage, m->created_at, m->updated_at, m->edited_at};
  for (size_t i = 0; i < JM__ARRAY_LEN(f); i++)
    free(f[i]);
}

void jm_message_list_free(jm_message_list *l) {
  if (l == NULL)
    return;
  for (size_t i = 0; i < l->n; i++)
    msg_free(&l->items[i]);
  free(l->items);
  memset(l, 0, sizeof *l);
  l->next_after = -1;
}

int jm__store_exists(jm_store *s, const char *id, jm_error *err) {
  sqlite3_stmt *st = prepare(s, "SELECT 1 FROM conversations WHERE id = ?1",
                             err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int r = sqlite3_step(st);
  sqlite3_finalize(st);
  if (r == SQLITE_ROW)
    return 0;
  return r == SQLITE_DONE ? jm__errf(err, JM_ENOTFOUND, "no conversation '%s'",
                                     id)
                          : step_err(s, r, err);
}

/* Room for twice as many messages; -ENOMEM leaves the list as it was. */
static int grow_msgs(jm_message_list *out, size_t *cap) {
  jm_message *p = realloc(out->items, 2 * *cap * sizeof *p);
  if (p == NULL)
    return -ENOMEM;
  out->items = p;
  *cap *= 2;
  return 0;
}

int jm_store_messages(jm_store *s, const char *id, int64_t after_seq,
                      size_t limit, jm_message_list *out, jm_error *err) {
  memset(out, 0, sizeof *out);
  out->next_after = -1;
  if (limit == 0)
    limit = 100;
  if (limit > 1000000)
    limit = 1000000;
  int rc = jm_id_check(id, strlen(id), err);
  if (rc == 0)
    rc = jm__store_current(s, id, err);
  if (rc != 0)
    return rc;
  sqlite3_stmt *st = prepare(s, messages_sql, err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, after_seq);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)limit + 1);
  size_t cap = limit < 64 ? limit : 64;
  out->items = calloc(cap, sizeof *out->items);
  int r = SQLITE_DONE;
  while (rc == 0 && out->items && (r = sqlite3_step(st)) == SQLITE_ROW) {
    if (out->n == limit) {
      out->next_after = out->items[out->n - 1].seq;
      break;
    }
    /* a page cut short would look complete: an error instead */
    if ((out->n == cap && grow_msgs(out, &cap) != 0) ||
        read_msg(st, &out->items[out->n++]) != 0)
      rc = jm__errf(err, -ENOMEM, "out of memory reading the messages of "
                    "'%s'", id);
  }
  if (rc == 0 && out->items == NULL)
    rc = jm__errf(err, -ENOMEM, "out of memory");
  else if (rc == 0)
    rc = step_err(s, r, err);
  sqlite3_finalize(st);
  if (rc == 0 && out->n == 0)
    rc = jm__store_exists(s, id, err); /* empty, or no such thing? */
  if (rc != 0)
    jm_message_list_free(out);
  return rc;
}
