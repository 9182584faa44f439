/*
 * ingest.c - journal file -> fold -> rows, the one write path of the mirror.
 *
 * What is committed together: for one conversation, in one transaction,
 * the rows the new lines produce (conversation, messages, bad lines) AND
 * the source row that says how far the file has been read (offset just past
 * the last LF consumed, the number of lines, the file's size/identity, and
 * two hashes).  A crash before COMMIT loses the whole slice and the next
 * ingest reads the same lines again; a crash after it has them all.  Nothing
 * is applied twice, nothing is skipped.
 *
 * Restart and drift: the source row is trusted only if the file still
 * agrees with it:
 *   - stat unchanged (size, mtime, inode, device as last seen): nothing new,
 *     nothing is read ("unchanged costs a stat");
 *   - file smaller than the offset: truncated or replaced -> drift;
 *   - SHA-256 of the first line (at most 4 KiB) differs -> another file;
 *   - SHA-256 of the 4 KiB before the offset differs -> rewritten/restored.
 * Drift wipes the conversation's rows (one DELETE, cascading) and replays the
 * file from byte 0 in the same transaction.  A missing file removes the
 * conversation's rows: the mirror mirrors what is in journal/.
 *
 * Memory: the file is read in 256 KiB preads through the line reader; the
 * fold's message cache is flushed into the open transaction whenever it
 * holds more than 8 MiB, so a huge file costs bounded memory.
 */
#include "mirror_int.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define READ_CHUNK (256 * 1024)
#define HASH_SPAN 4096
#define FLUSH_MEM ((size_t)8 << 20)

/* Hashes --------------------------------------------------------------------- */

int jm__hash_head(int fd, uint64_t offset, unsigned char out[32]) {
  char buf[HASH_SPAN];
  size_t want = offset < HASH_SPAN ? (size_t)offset : HASH_SPAN;
  ssize_t n = jm__pread_full(fd, buf, want, 0);
  if (n < 0)
    return (int)n;
  char *nl = memchr(buf, '\n', (size_t)n);
  size_t len = nl ? (size_t)(nl - buf) + 1 : (size_t)n;
  jm_sha256 c;
  jm_sha256_init(&c);
  jm_sha256_update(&c, buf, len);
  jm_sha256_final(&c, out);
  return 0;
}

int jm__hash_tail(int fd, uint64_t offset, unsigned char out[32]) {
  char buf[HASH_SPAN];
  uint64_t start = offset > HASH_SPAN ? offset - HASH_SPAN : 0;
  ssize_t n = jm__pread_full(fd, buf, (size_t)(offset - start), (off_t)start);
  if (n < 0)
    return (int)n;
  jm_sha256 c;
  jm_sha256_init(&c);
  jm_sha256_update(&c, buf, (size_t)n);
  jm_sha256_final(&c, out);
  return 0;
}

/* Reading rows back ------------------------------------------------------------ */

static int copy_col(sqlite3_stmt *st, int col, jm__nstr *d) {
  free(d->p);
  d->p = NULL;
  d->n = 0;
  if (sqlite3_column_type(st, col) == SQLITE_NULL)
    return 0;
  const void *p = sqlite3_column_blob(st, col);
  size_t n = (size_t)sqlite3_column_bytes(st, col);
  d->p = jm__strndup(p ? p : "", n);
  d->n = n;
  return d->p ? 0 : -ENOMEM;
}

static void copy_ts(sqlite3_stmt *st, int col, char dst[JM_TS_LEN + 1]) {
  const unsigned char *t = sqlite3_column_text(st, col);
  dst[0] = '\0';
  if (t && strlen((const char *)t) == JM_TS_LEN)
    memcpy(dst, t, JM_TS_LEN + 1);
}

int jm__source_get(jm_mirror *m, const char *id, jm__source *src,
                   jm_error *err) {
  memset(src, 0, sizeof *src);
  sqlite3_stmt *st = jm__stmt(m, JM__S_SRC_GET, err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int s = sqlite3_step(st);
  if (s == SQLITE_ROW) {
    src->found = 1;
    src->offset = (uint64_t)sqlite3_column_int64(st, 0);
    src->lines = (uint64_t)sqlite3_column_int64(st, 1);
    src->size = (uint64_t)sqlite3_column_int64(st, 2);
    src->dev = sqlite3_column_int64(st, 3);
    src->ino = sqlite3_column_int64(st, 4);
    src->mtime_ns = sqlite3_column_int64(st, 5);
    if (sqlite3_column_bytes(st, 6) == 32) {
      memcpy(src->head, sqlite3_column_blob(st, 6), 32);
      src->has_head = 1;
    }
    if (sqlite3_column_bytes(st, 7) == 32) {
      memcpy(src->tail, sqlite3_column_blob(st, 7), 32);
      src->has_tail = 1;
    }
  }
  sqlite3_reset(st);
  if (s != SQLITE_ROW && s != SQLITE_DONE)
    return jm__sql_err(m, err, "cannot read source row");
  return 0;
}

int jm__conv_load(jm_mirror *m, const char *id, jm__conv *c, int *found,
                  jm_error *err) {
  *found = 0;
  sqlite3_stmt *st = jm__stmt(m, JM__S_CONV_GET, err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int s = sqlite3_step(st);
  int rc = 0;
  if (s == SQLITE_ROW) {
    *found = 1;
    if (copy_col(st, 0, &c->title) || copy_col(st, 1, &c->brain) ||
        copy_col(st, 2, &c->meta))
      rc = jm__errf(err, -ENOMEM, "out of memory");
    copy_ts(st, 3, c->created_at);
    copy_ts(st, 4, c->updated_at);
    copy_ts(st, 5, c->deleted_at);
    c->message_count = sqlite3_column_int64(st, 6);
    c->bad_lines = sqlite3_column_int64(st, 7);
    c->unknown_events = sqlite3_column_int64(st, 8);
  } else if (s != SQLITE_DONE)
    rc = jm__sql_err(m, err, "cannot read conversation row");
  sqlite3_reset(st);
  return rc;
}

/* The fold's loader: a message the cache does not hold, from the mirror. */
int jm__load_msg(void *ctx, jm__msg *msg) {
  jm__writer *w = ctx;
  sqlite3_stmt *st = jm__stmt(w->m, JM__S_MSG_GET, w->err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, w->id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, msg->id, (int)msg->id_len, SQLITE_STATIC);
  int s = sqlite3_step(st);
  if (s != SQLITE_ROW) {
    sqlite3_reset(st);
    return s == SQLITE_DONE ? 0
                            : jm__sql_err(w->m, w->err, "cannot read message");
  }
  jm__nstr content = {0}, thinking = {0}, status = {0};
  msg->rowid = sqlite3_column_int64(st, 0);
  msg->seq = sqlite3_column_int64(st, 1);
  const char *role = (const char *)sqlite3_column_text(st, 2);
  msg->role = jm__role_from(role ? role : "", role ? strlen(role) : 0);
  int rc = copy_col(st, 3, &content) || copy_col(st, 4, &msg->parent_id) ||
           copy_col(st, 5, &msg->brain) ||
           copy_col(st, 6, &msg->reasoning_level) ||
           copy_col(st, 7, &thinking) || copy_col(st, 8, &msg->meta) ||
           copy_col(st, 9, &status) || copy_col(st, 10, &msg->stop_reason) ||
           copy_col(st, 11, &msg->usage);
  copy_ts(st, 12, msg->created_at);
  copy_ts(st, 13, msg->updated_at);
  copy_ts(st, 14, msg->edited_at);
  sqlite3_reset(st);
  if (!rc && content.p)
    rc = jm__buf_append(&msg->content, content.p, content.n);
  msg->thinking_null = thinking.p == NULL;
  if (!rc && thinking.p)
    rc = jm__buf_append(&msg->thinking, thinking.p, thinking.n);
  msg->complete = status.p && strcmp(status.p, "complete") == 0;
  free(content.p);
  free(thinking.p);
  free(status.p);
  if (rc) {
    jm__msg_clear(msg);
    return jm__errf(w->err, -ENOMEM, "out of memory");
  }
  return 1;
}

/* Writing rows ------------------------------------------------------------------- */

static void bind_nstr(sqlite3_stmt *st, int i, const jm__nstr *s) {
  if (s->p)
    sqlite3_bind_text(st, i, s->p, (int)s->n, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, i);
}

static void bind_ts(sqlite3_stmt *st, int i, const char *ts) {
  if (ts[0])
    sqlite3_bind_text(st, i, ts, JM_TS_LEN, SQLITE_STATIC);
  else
    sqlite3_bind_null(st, i);
}

static int step_done(jm_mirror *m, sqlite3_stmt *st, jm_error *err,
                     const char *what) {
  int s = sqlite3_step(st);
  sqlite3_reset(st);
  if (s != SQLITE_DONE)
    return jm__sql_err(m, err, what);
  return 0;
}

static void bind_msg(sqlite3_stmt *st, const char *id, const jm__msg *g) {
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, g->id, (int)g->id_len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, g->seq);
  sqlite3_bind_text(st, 4, jm__role_name(g->role), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, g->content.p ? g->content.p : "",
                    (int)g->content.len, SQLITE_STATIC);
  bind_nstr(st, 6, &g->parent_id);
  bind_nstr(st, 7, &g->brain);
  bind_nstr(st, 8, &g->reasoning_level);
  if (g->thinking_null)
    sqlite3_bind_null(st, 9);
  else
    sqlite3_bind_text(st, 9, g->thinking.p ? g->thinking.p : "",
                      (int)g->thinking.len, SQLITE_STATIC);
  bind_nstr(st, 10, &g->meta);
  sqlite3_bind_text(st, 11, g->complete ? "complete" : "streaming", -1,
                    SQLITE_STATIC);
  bind_nstr(st, 12, &g->stop_reason);
  bind_nstr(st, 13, &g->usage);
  bind_ts(st, 14, g->created_at);
  bind_ts(st, 15, g->updated_at);
  bind_ts(st, 16, g->edited_at);
}

static int write_row(jm__writer *w, jm__msg *g);

/* The kept set ------------------------------------------------------------------ */

static size_t kept_slot(const jm__kept *k, int64_t rowid) {
  uint64_t h = (uint64_t)rowid * 0x9E3779B97F4A7C15ULL;
  size_t i = (size_t)(h >> 17) & (k->cap - 1);
  while (k->slots[i] != 0 && k->slots[i] != rowid)
    i = (i + 1) & (k->cap - 1);
  return i;
}

static int kept_has(const jm__kept *k, int64_t rowid) {
  return k->cap && k->slots[kept_slot(k, rowid)] == rowid;
}

static int kept_add(jm__kept *k, int64_t rowid) {
  if ((k->n + 1) * 2 > k->cap) { /* keep it at most half full */
    size_t cap = k->cap ? k->cap * 2 : 1024;
    int64_t *old = k->slots;
    size_t oldcap = k->cap;
    if ((k->slots = calloc(cap, sizeof *k->slots)) == NULL) {
      k->slots = old;
      return -ENOMEM;
    }
    k->cap = cap;
    k->n = 0;
    for (size_t i = 0; i < oldcap; i++)
      if (old[i]) {
        k->slots[kept_slot(k, old[i])] = old[i];
        k->n++;
      }
    free(old);
  }
  size_t i = kept_slot(k, rowid);
  if (k->slots[i] == 0) {
    k->slots[i] = rowid;
    k->n++;
  }
  return 0;
}

void jm__kept_free(jm__kept *k) {
  free(k->slots);
  memset(k, 0, sizeof *k);
}

/* Diff-replay ---------------------------------------------------------------------
 *
 * jm_mirror_replay() of one conversation folds its file from scratch and
 * must leave exactly the rows a wipe-and-insert would.  Wiping is what a
 * replay means, but it makes the full-text index forget and relearn every
 * message (FTS5 must re-tokenise the old text to delete it): seconds for a
 * conversation of 10,000 messages.  So the fold's result is applied as a
 * diff, in the same single transaction: a message whose row already holds
 * exactly the folded columns is left alone, one that differs is rewritten,
 * and rows the fold did not produce are deleted at the end.  Nothing else
 * differs for a reader; the rows still come from the journal alone. */

/* A row that holds `seq` but is not `keep` and not this replay's: it is in
 * the way of a unique index and not part of the result; delete it. */
static int clear_seq(jm__writer *w, int64_t seq, int64_t keep) {
  sqlite3_stmt *st = jm__stmt(w->m, JM__S_MSG_BY_SEQ, w->err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, w->id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, seq);
  int64_t other = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0)
                                                  : 0;
  sqlite3_reset(st);
  if (other == 0 || other == keep || kept_has(w->kept, other))
    return 0;
  if ((st = jm__stmt(w->m, JM__S_MSG_DEL, w->err)) == NULL)
    return JM_ESQLITE;
  sqlite3_bind_int64(st, 1, other);
  return step_done(w->m, st, w->err, "cannot delete message");
}

/* The row holding message `g`'s id in this conversation (0: none). */
static int64_t row_of(jm__writer *w, const jm__msg *g, int *rc) {
  sqlite3_stmt *st = jm__stmt(w->m, JM__S_MSG_ROWID, w->err);
  if (st == NULL) {
    *rc = JM_ESQLITE;
    return 0;
  }
  sqlite3_bind_text(st, 1, w->id, -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 2, g->id, (int)g->id_len, SQLITE_STATIC);
  int s = sqlite3_step(st);
  int64_t r = s == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
  sqlite3_reset(st);
  if (s != SQLITE_ROW && s != SQLITE_DONE)
    *rc = jm__sql_err(w->m, w->err, "cannot read message");
  return r;
}

/* Does row `rowid` hold exactly g's values, stored as g would store them?
 * Compared by SQLite on the stored values, so that no tampered column can
 * pass for equal. */
static int row_same(jm__writer *w, const jm__msg *g, int64_t rowid,
                    int *rc) {
  sqlite3_stmt *st = jm__stmt(w->m, JM__S_MSG_SAME, w->err);
  if (st == NULL) {
    *rc = JM_ESQLITE;
    return 0;
  }
  bind_msg(st, w->id, g);
  sqlite3_bind_int64(st, 17, rowid);
  int s = sqlite3_step(st);
  sqlite3_reset(st);
  if (s != SQLITE_ROW && s != SQLITE_DONE)
    *rc = jm__sql_err(w->m, w->err, "cannot compare message");
  return s == SQLITE_ROW;
}

/* A folded message this replay has not written yet: keep the row that
 * holds exactly it, else write it (over the row holding its id, if any). */
static int write_diff(jm__writer *w, jm__msg *g) {
  int rc = 0;
  int64_t rowid = row_of(w, g, &rc);
  if (rc == 0 && rowid && !kept_has(w->kept, rowid) &&
      row_same(w, g, rowid, &rc))
    rc = kept_add(w->kept, rowid); /* already right: not touched */
  else if (rc == 0) {
    g->rowid = rowid;
    rc = clear_seq(w, g->seq, g->rowid);
    if (rc == 0)
      rc = write_row(w, g);
    if (rc == 0)
      rc = kept_add(w->kept, g->rowid ? g->rowid
                                      : sqlite3_last_insert_rowid(w->m->db));
  }
  return rc == -ENOMEM ? jm__errf(w->err, rc, "out of memory") : rc;
}

/* The loader of a diff-replay: only rows this replay wrote are its own. */
static int load_kept(void *ctx, jm__msg *msg) {
  jm__writer *w = ctx;
  int rc = jm__load_msg(w, msg);
  if (rc == 1 && !kept_has(w->kept, msg->rowid)) {
    jm__msg_clear(msg);
    msg->rowid = 0;
    return 0;
  }
  return rc;
}

int jm__diff_begin(jm__writer *w, jm__kept *kept) {
  memset(kept, 0, sizeof *kept);
  w->kept = kept;
  sqlite3_stmt *st = jm__stmt(w->m, JM__S_BAD_DEL, w->err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, w->id, -1, SQLITE_STATIC);
  return step_done(w->m, st, w->err, "cannot clear bad lines");
}

/* After the last flush: rows of the conversation the fold did not make. */
static int diff_end(jm__writer *w) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(w->m->db,
                         "SELECT rowid FROM messages WHERE conversation_id = "
                         "?1",
                         -1, &st, NULL) != SQLITE_OK)
    return jm__sql_err(w->m, w->err, "cannot list messages");
  sqlite3_bind_text(st, 1, w->id, -1, SQLITE_STATIC);
  int64_t *gone = NULL;
  size_t n = 0, cap = 0;
  int rc = 0;
  while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
    int64_t r = sqlite3_column_int64(st, 0);
    if (kept_has(w->kept, r))
      continue;
    if (n == cap) {
      int64_t *p = realloc(gone, (cap = cap ? cap * 2 : 64) * sizeof *p);
      if (p == NULL)
        rc = jm__errf(w->err, -ENOMEM, "out of memory");
      else
        gone = p;
    }
    if (rc == 0)
      gone[n++] = r;
  }
  sqlite3_finalize(st);
  for (size_t i = 0; rc == 0 && i < n; i++) {
    if ((st = jm__stmt(w->m, JM__S_MSG_DEL, w->err)) == NULL)
      rc = JM_ESQLITE;
    else {
      sqlite3_bind_int64(st, 1, gone[i]);
      rc = step_done(w->m, st, w->err, "cannot delete message");
    }
  }
  free(gone);
  return rc;
}

static int write_row(jm__writer *w, jm__msg *g) {
  int upd = g->rowid != 0;
  sqlite3_stmt *st =
      jm__stmt(w->m, upd ? JM__S_MSG_UPD : JM__S_MSG_INS, w->err);
  if (st == NULL)
    return JM_ESQLITE;
  bind_msg(st, w->id, g);
  if (upd)
    sqlite3_bind_int64(st, 17, g->rowid);
  return step_done(w->m, st, w->err, "cannot write message");
}

static int write_msg(void *ctx, jm__msg *g) {
  jm__writer *w = ctx;
  sqlite3_stmt *st;
  if (w->kept && g->exists && g->rowid == 0)
    return write_diff(w, g);
  if (!g->exists) {
    if (g->rowid == 0)
      return 0; /* created and deleted within the batch */
    if ((st = jm__stmt(w->m, JM__S_MSG_DEL, w->err)) == NULL)
      return JM_ESQLITE;
    sqlite3_bind_int64(st, 1, g->rowid);
    return step_done(w->m, st, w->err, "cannot delete message");
  }
  /* A row this replay wrote, rewritten: deleted and re-created since, the
   * message has a new seq, which a stale row of the old mirror may hold. */
  int rc = w->kept ? clear_seq(w, g->seq, g->rowid) : 0;
  return rc ? rc : write_row(w, g);
}

static int write_bad(void *ctx, const jm__bad_rec *b) {
  jm__writer *w = ctx;
  sqlite3_stmt *st = jm__stmt(w->m, JM__S_BAD_PUT, w->err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, w->id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)b->line);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)b->offset);
  sqlite3_bind_text(st, 4, jm_bad_reason_name(b->reason), -1, SQLITE_STATIC);
  sqlite3_bind_text(st, 5, b->msg, -1, SQLITE_STATIC);
  return step_done(w->m, st, w->err, "cannot record bad line");
}

static int write_conv(jm__writer *w, const jm__conv *c) {
  sqlite3_stmt *st = jm__stmt(w->m, JM__S_CONV_PUT, w->err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, w->id, -1, SQLITE_STATIC);
  bind_nstr(st, 2, &c->title);
  bind_nstr(st, 3, &c->brain);
  bind_nstr(st, 4, &c->meta);
  bind_ts(st, 5, c->created_at);
  bind_ts(st, 6, c->updated_at);
  bind_ts(st, 7, c->deleted_at);
  sqlite3_bind_int64(st, 8, c->message_count);
  sqlite3_bind_int64(st, 9, c->bad_lines);
  sqlite3_bind_int64(st, 10, c->unknown_events);
  return step_done(w->m, st, w->err, "cannot write conversation");
}

int jm__flush(jm__writer *w, jm__fold *f) {
  /* The conversation row first: messages reference it. */
  int rc = write_conv(w, &f->conv);
  if (rc == 0)
    rc = jm__fold_flush(f, write_msg, write_bad, w);
  if (rc == 0) {
    /* Rows of this conversation may now be in the mirror: look there (a
     * diff-replay only at the rows it wrote). */
    f->load = w->kept ? load_kept : jm__load_msg;
    f->load_ctx = w;
  }
  return rc;
}

int jm__commit_conversation(jm__writer *w, jm__fold *f, int fd,
                            const jm__file_state *fs) {
  jm_mirror *m = w->m;
  const char *id = w->id;
  jm_error *err = w->err;
  int rc = jm__flush(w, f);
  if (rc == 0 && w->kept)
    rc = diff_end(w);
  if (rc)
    return rc;
  unsigned char head[32], tail[32];
  int have = fs->offset > 0;
  if (have && ((rc = jm__hash_head(fd, fs->offset, head)) != 0 ||
               (rc = jm__hash_tail(fd, fs->offset, tail)) != 0))
    return jm__errno_f(err, -rc, "cannot read journal of '%s'", id);
  sqlite3_stmt *st = jm__stmt(m, JM__S_SRC_PUT, err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, (sqlite3_int64)fs->offset);
  sqlite3_bind_int64(st, 3, (sqlite3_int64)fs->lines);
  sqlite3_bind_int64(st, 4, (sqlite3_int64)fs->size);
  sqlite3_bind_int64(st, 5, fs->dev);
  sqlite3_bind_int64(st, 6, fs->ino);
  sqlite3_bind_int64(st, 7, fs->mtime_ns);
  if (have) {
    sqlite3_bind_blob(st, 8, head, 32, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 9, tail, 32, SQLITE_TRANSIENT);
  }
  return step_done(m, st, err, "cannot write source row");
}

/* Deleting the conversation row cascades to the rest.  Rows left without
 * their conversation row (a hand edit made with foreign keys off, as the
 * sqlite3 shell has them) would not cascade, and their seq would block the
 * replay's inserts forever: they go first, explicitly. */
static int wipe_orphans(jm_mirror *m, const char *id, jm_error *err) {
  static const char *const sql[] = {
    "DELETE FROM messages WHERE conversation_id = ?1",
    "DELETE FROM bad_lines WHERE conversation_id = ?1",
    "DELETE FROM sources WHERE conversation_id = ?1",
  };
  for (size_t i = 0; i < JM__ARRAY_LEN(sql); i++) {
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(m->db, sql[i], -1, &st, NULL) != SQLITE_OK)
      return jm__sql_err(m, err, "cannot wipe conversation");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    int s = sqlite3_step(st);
    sqlite3_finalize(st);
    if (s != SQLITE_DONE)
      return jm__sql_err(m, err, "cannot wipe conversation");
  }
  return 0;
}

int jm__wipe(jm_mirror *m, const char *id, jm_error *err) {
  sqlite3_stmt *st = jm__stmt(m, JM__S_CONV_DEL, err);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int rc = step_done(m, st, err, "cannot wipe conversation");
  if (rc == 0 && sqlite3_changes(m->db) == 0)
    rc = wipe_orphans(m, id, err); /* no row to cascade from */
  return rc;
}

/* Ingest ------------------------------------------------------------------------- */

void jm__file_state_of(const struct stat *st, jm__file_state *fs) {
  fs->size = (uint64_t)st->st_size;
  fs->dev = (int64_t)st->st_dev;
  fs->ino = (int64_t)st->st_ino;
#ifdef __APPLE__
  fs->mtime_ns = (int64_t)st->st_mtimespec.tv_sec * 1000000000 +
                 st->st_mtimespec.tv_nsec;
#else
  fs->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 +
                 st->st_mtim.tv_nsec;
#endif
}

static int unchanged(const jm__source *src, const jm__file_state *fs) {
  return src->found && src->size == fs->size && src->dev == fs->dev &&
         src->ino == fs->ino && src->mtime_ns == fs->mtime_ns;
}

/* Does the file still agree with what the mirror read of it? */
static int drifted(int fd, const jm__source *src, const jm__file_state *fs,
                   char *why, size_t cap) {
  if (!src->found || src->offset == 0)
    return 0;
  if (fs->size < src->offset) {
    snprintf(why, cap, "file is %llu bytes, smaller than the %llu ingested",
             (unsigned long long)fs->size, (unsigned long long)src->offset);
    return 1;
  }
  unsigned char h[32];
  if (src->has_head &&
      (jm__hash_head(fd, src->offset, h) != 0 || memcmp(h, src->head, 32))) {
    snprintf(why, cap, "first line differs from the one ingested");
    return 1;
  }
  if (src->has_tail &&
      (jm__hash_tail(fd, src->offset, h) != 0 || memcmp(h, src->tail, 32))) {
    snprintf(why, cap, "bytes before offset %llu differ from those ingested",
             (unsigned long long)src->offset);
    return 1;
  }
  return 0;
}

int jm__forget(jm_mirror *m, const char *id, int *removed, jm_error *err) {
  *removed = 0;
  int rc = jm__exec(m, "BEGIN IMMEDIATE", err);
  if (rc)
    return rc;
  rc = jm__wipe(m, id, err);
  if (rc == 0) {
    *removed = sqlite3_changes(m->db) > 0;
    return jm__exec(m, "COMMIT", err);
  }
  jm__exec(m, "ROLLBACK", NULL);
  return rc;
}

int jm_mirror_forget(jm_mirror *m, const char *id, jm_error *err) {
  int removed;
  int rc = jm_id_check(id, strlen(id), err);
  if (rc)
    return rc;
  return jm__forget(m, id, &removed, err);
}

typedef struct slice {
  jm_mirror *m;
  const char *id;
  int fd;
  jm__fold *fold;
  jm__writer *w;
  const jm_ingest_limits *lim;
  jm_ingest_result *res;
  jm_error *err;
} slice;

/* Fold one line the reader produced. */
static int fold_line(slice *s, int status, jm_read *rd) {
  if (status == JM_READ_BAD) {
    s->res->bad_lines++;
    return jm__fold_bad(s->fold, rd->line, rd->offset, rd->bad.reason,
                        rd->bad.msg);
  }
  jm__fev fev;
  char *tmp;
  int rc = jm__fev_from_event(&rd->event, rd->line, &fev, &tmp);
  if (rc == 0)
    rc = jm__fold_apply(s->fold, &fev);
  free(tmp);
  s->res->events++;
  return rc;
}

static int over_limit(const slice *s, uint64_t start, uint64_t now) {
  const jm_ingest_limits *l = s->lim;
  if (l == NULL)
    return 0;
  if (l->max_bytes && now - start >= l->max_bytes)
    return 1;
  if (l->max_events && s->res->events + s->res->bad_lines >= l->max_events)
    return 1;
  return 0;
}

/* Read from the reader's position to the last LF before `end` (or a
 * limit), folding as it goes.  Returns 0 or an error. */
static int read_lines(slice *s, jm_reader *r, uint64_t end) {
  char *buf = malloc(READ_CHUNK);
  if (buf == NULL)
    return jm__errf(s->err, -ENOMEM, "out of memory");
  uint64_t start = jm_reader_offset(r), pos = start;
  int rc = 0, stop = 0;
  while (rc == 0 && !stop && pos < end) {
    if (jm__canceled(s->m)) {
      rc = jm__errf(s->err, JM_ECANCELED, "ingest of '%s' canceled", s->id);
      break;
    }
    size_t want = end - pos < READ_CHUNK ? (size_t)(end - pos) : READ_CHUNK;
    ssize_t n = jm__pread_full(s->fd, buf, want, (off_t)pos);
    if (n <= 0) {
      if (n < 0)
        rc = jm__errno_f(s->err, (int)-n, "cannot read journal of '%s'",
                         s->id);
      break;
    }
    pos += (uint64_t)n;
    jm_reader_feed(r, buf, (size_t)n);
    jm_read rd;
    int st;
    while (rc == 0 && (st = jm_reader_next(r, &rd)) != JM_READ_NEED_MORE) {
      if (st < 0) {
        rc = jm__errf(s->err, -ENOMEM, "out of memory");
        break;
      }
      rc = fold_line(s, st, &rd);
      if (rc == 0 && s->fold->mem > FLUSH_MEM)
        rc = jm__flush(s->w, s->fold);
      if (rc == 0 && over_limit(s, start, jm_reader_offset(r))) {
        stop = 1;
        break;
      }
    }
  }
  if (rc == -ENOMEM && s->err && s->err->code == 0)
    jm__errf(s->err, rc, "out of memory");
  s->res->more = stop && jm_reader_offset(r) < end;
  free(buf);
  return rc;
}

/* Inside the transaction: drift check, fold new lines, commit state. */
static int ingest_locked(slice *s, const jm__file_state *now) {
  jm_mirror *m = s->m;
  jm__source src;
  int rc = jm__source_get(m, s->id, &src, s->err);
  if (rc)
    return rc;
  if (unchanged(&src, now)) {
    s->res->unchanged = 1;
    s->res->offset = src.offset;
    return 0;
  }
  int conv_found = 0;
  if (drifted(s->fd, &src, now, s->res->why, sizeof s->res->why)) {
    if ((rc = jm__wipe(m, s->id, s->err)) != 0)
      return rc;
    memset(&src, 0, sizeof src);
    s->res->replayed = 1;
  } else if ((rc = jm__conv_load(m, s->id, &s->fold->conv, &conv_found,
                                 s->err)) != 0)
    return rc;
  if (conv_found && !src.found) {
    /* rows without a source row: not ours to trust; start over */
    if ((rc = jm__wipe(m, s->id, s->err)) != 0)
      return rc;
    jm__conv_release(&s->fold->conv);
    memset(&s->fold->conv, 0, sizeof s->fold->conv);
  }
  if (src.found && s->fold->conv.message_count > 0) {
    s->fold->load = jm__load_msg; /* it may name messages already stored */
    s->fold->load_ctx = s->w;
  }
  jm_reader *r = jm_reader_new(s->id, m->max_line);
  if (r == NULL)
    return jm__errf(s->err, -ENOMEM, "out of memory");
  jm_reader_seek(r, src.offset, src.lines);
  rc = read_lines(s, r, now->size);
  jm__file_state fs = *now;
  fs.offset = jm_reader_offset(r);
  fs.lines = jm_reader_line(r);
  if (s->res->more)
    fs.size = fs.offset; /* examined only this far: not "unchanged" yet */
  s->res->lines = fs.lines - src.lines;
  s->res->bytes = fs.offset - src.offset;
  s->res->offset = fs.offset;
  jm_reader_free(r);
  if (rc == 0)
    rc = jm__commit_conversation(s->w, s->fold, s->fd, &fs);
  return rc;
}

int jm_mirror_ingest(jm_mirror *m, const char *id, const jm_ingest_limits *lim,
                     jm_ingest_result *res, jm_error *err) {
  jm_ingest_result tmp;
  if (res == NULL)
    res = &tmp;
  memset(res, 0, sizeof *res);
  if (!jm_mirror_locked(m))
    return jm__errf(err, JM_EUSAGE, "ingest needs the mirror's writer lock");
  int rc = jm__writable(m, err);
  if (rc)
    return rc;
  rc = jm_id_check(id, strlen(id), err);
  if (rc)
    return rc;
  char *path = jm_journal_path(m->root, id);
  if (path == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  /* O_NONBLOCK: a FIFO named like a journal must not hang us. */
  int fd = jm__open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
  struct stat st;
  if (fd >= 0 && (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))) {
    jm__close(fd); /* not a journal file: as if it were not there */
    fd = -ENOENT;
  }
  if (fd == -ENOENT || fd == -ELOOP) {
    free(path);
    if (!jm__journal_dir_present(m))
      return jm__errf(err, -ENOENT, "journal directory '%s' is missing: "
                      "nothing removed", m->journal_dir);
    int had_rows;
    res->removed = 1; /* the file is gone (whether it had rows or not) */
    return jm__forget(m, id, &had_rows, err);
  }
  if (fd < 0) {
    rc = jm__errno_f(err, -fd, "cannot open '%s'", path);
    free(path);
    return rc;
  }
  free(path);
  jm__file_state now = {0};
  jm__file_state_of(&st, &now);
  res->file_size = now.size;
  jm__source src;
  if ((rc = jm__source_get(m, id, &src, err)) != 0 || unchanged(&src, &now)) {
    /* Nothing new: decided by a stat and a read of one row, no transaction. */
    res->unchanged = rc == 0;
    res->offset = src.offset;
    jm__close(fd);
    return rc;
  }
  jm__fold fold;
  jm__fold_init(&fold, NULL, NULL);
  jm__writer w = {m, id, err, NULL};
  slice s = {m, id, fd, &fold, &w, lim, res, err};
  rc = jm__exec(m, "BEGIN IMMEDIATE", err);
  if (rc == 0) {
    rc = ingest_locked(&s, &now);
    if (rc == 0)
      rc = jm__exec(m, "COMMIT", err);
    if (rc != 0)
      jm__exec(m, "ROLLBACK", NULL);
  }
  jm__fold_release(&fold);
  jm__close(fd);
  return rc;
}

/* May rows be folded into this mirror as it was opened? */
int jm__writable(jm_mirror *m, jm_error *err) {
  if (m->newer)
    return jm__errf(err, JM_ESCHEMA, "mirror '%s' was made by a newer "
                    "jmirror: only 'jmirror replay --all' may replace it",
                    m->db_path);
  if (m->built_max_line)
    return jm__errf(err, JM_EUSAGE, "mirror '%s' was built with a maximum "
                    "line length of %zu bytes, not %zu: rebuild it with "
                    "'jmirror replay --all' to change it", m->db_path,
                    m->built_max_line, m->max_line);
  return 0;
}

/* Does journal/ exist?  Without it nothing is "gone": it is a disk not
 * mounted, a restore in progress, not a deletion. */
int jm__journal_dir_present(jm_mirror *m) {
  struct stat st;
  return stat(m->journal_dir, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Is the mirror's view of `id` current?  1: its file's stat is what the
 * mirror recorded (or neither the file nor rows exist); 0: the file
 * changed, is new, or is gone while rows remain (ingest will settle it);
 * <0: error.  No lock needed: it only reads. */
int jm__mirror_current(jm_mirror *m, const char *id, jm_error *err) {
  char *path = jm_journal_path(m->root, id);
  if (path == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  struct stat st;
  int have = lstat(path, &st) == 0;
  int e = errno;
  free(path);
  jm__source src;
  int rc = jm__source_get(m, id, &src, err);
  if (rc)
    return rc;
  if (!have) {
    if (e != ENOENT)
      return jm__errno_f(err, e, "cannot stat journal of '%s'", id);
    jm__conv c = {0};
    int found = 0;
    rc = jm__conv_load(m, id, &c, &found, err);
    jm__conv_release(&c);
    return rc ? rc : !found && !src.found;
  }
  jm__file_state now;
  jm__file_state_of(&st, &now);
  return unchanged(&src, &now);
}
