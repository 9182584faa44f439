/*
 * verify.c - does the mirror hold exactly what the journal says?
 *
 * Independent of the mirror's own bookkeeping: every file is folded again
 * (the same pipeline and fold as a replay) into a private temporary
 * database, and its rows are compared column by column with the mirror's,
 * which is ATTACHed read-only.  All of it happens inside one read
 * transaction, so a daemon committing meanwhile cannot cause false alarms:
 * verify judges one consistent snapshot of the mirror.
 *
 * The file is folded up to the offset the mirror says it has ingested, so a
 * mirror that is merely behind is not called drift.  Per conversation:
 *   ok      rows equal, and the mirror has ingested up to the last LF;
 *   behind  rows equal for the part ingested, more complete lines follow
 *           (a file the mirror has not seen at all yet, and has no rows of,
 *           is behind by all its complete lines: a daemon about to ingest a
 *           new file is not drift);
 *   drift   anything else: rows missing / extra / changed (with the columns),
 *           conversation columns, bad lines, offset or line count differ,
 *           the file no longer matches what was ingested (hashes), the file
 *           is gone but rows remain, or the conversation has rows but no
 *           record of its file.
 * Ids asked for by name are checked once each, and one that neither
 * journal/ nor the mirror knows is an error.
 * Verify never writes; repairing is the caller's choice (jmirror verify
 * --repair replays drifted conversations and ingests behind ones).
 */
#include "mirror_int.h"
#include "migrate.h"
#include "pipeline.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

static const char *const msg_cols[] = {
  "seq", "role", "content", "parent_id", "brain", "reasoning_level",
  "thinking", "meta", "status", "stop_reason", "usage", "created_at",
  "updated_at", "edited_at",
};
static const char *const conv_cols[] = {
  "title", "brain", "meta", "created_at", "updated_at", "deleted_at",
  "message_count", "bad_lines", "unknown_events",
};

/* "(f.a IS NOT l.a) << 0 | (f.b IS NOT l.b) << 1 | ..." */
static char *mask_expr(const char *const *cols, size_t n) {
  jm__buf b = {0};
  for (size_t i = 0; i < n; i++)
    if (jm__buf_printf(&b, "%s((f.%s IS NOT l.%s) << %zu)", i ? " | " : "",
                       cols[i], cols[i], i) != 0) {
      jm__buf_release(&b);
      return NULL;
    }
  return b.p;
}

typedef struct vctx {
  jm_mirror *live;        /* the mirror (only its path is used) */
  jm_mirror scratch;      /* temp database; live attached as "live" */
  jm_error *err;
  jm__fold fold;
  jm__writer w;
  jm_verify_fn fn;
  void *fn_ctx;
  jm_verify_summary *sum;
  jm_progress_fn progress;
  void *progress_ctx;
  uint64_t done, total;
  jm_rebuild_stats stats; /* unused counters the sink wants */
} vctx;

typedef struct vfile {
  jm__source src;         /* what the mirror says */
  uint64_t file_size;     /* stat size */
  uint64_t last_lf;       /* just past the file's last LF */
  int conv_in_mirror;     /* a conversations row exists */
  char why[160];          /* hash drift, found before folding */
} vfile;

/* SQL helpers on the scratch connection ---------------------------------------- */

static sqlite3_stmt *prep(vctx *v, const char *sql) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(v->scratch.db, sql, -1, &st, NULL) != SQLITE_OK) {
    jm__sql_err(&v->scratch, v->err, "cannot prepare verify query");
    return NULL;
  }
  return st;
}

static void add_id(jm__buf *b, int *shown, const unsigned char *id) {
  if ((*shown)++ < 3)
    jm__buf_printf(b, "%s'%.40s'", *shown > 1 ? ", " : "", id);
  else if (*shown == 4)
    jm__buf_printf(b, ", ...");
}

/* Messages in one side only: count them and name a few. */
static int one_sided(vctx *v, const char *id, const char *a, const char *b,
                     uint64_t *count, jm__buf *names) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT x.id FROM %s.messages x WHERE x.conversation_id = ?1 AND"
           " NOT EXISTS (SELECT 1 FROM %s.messages y WHERE"
           " y.conversation_id = ?1 AND y.id = x.id) ORDER BY x.seq",
           a, b);
  sqlite3_stmt *st = prep(v, sql);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int shown = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    (*count)++;
    add_id(names, &shown, sqlite3_column_text(st, 0));
  }
  sqlite3_finalize(st);
  return 0;
}

static void mask_names(jm__buf *b, int64_t mask, const char *const *cols,
                       size_t n) {
  int first = 1;
  for (size_t i = 0; i < n; i++)
    if (mask & ((int64_t)1 << i)) {
      jm__buf_printf(b, "%s%s", first ? "" : ",", cols[i]);
      first = 0;
    }
}

static int changed_msgs(vctx *v, const char *id, jm_verify_item *it,
                        jm__buf *names) {
  char *mask = mask_expr(msg_cols, JM__ARRAY_LEN(msg_cols));
  char *sql = mask ? jm__asprintf(
                         "SELECT f.id, (%s) AS m FROM main.messages f JOIN "
                         "live.messages l ON l.conversation_id = f.conversation_id"
                         " AND l.id = f.id WHERE f.conversation_id = ?1 AND m != 0"
                         " ORDER BY f.seq",
                         mask)
                   : NULL;
  free(mask);
  if (sql == NULL)
    return jm__errf(v->err, -ENOMEM, "out of memory");
  sqlite3_stmt *st = prep(v, sql);
  free(sql);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  int shown = 0;
  while (sqlite3_step(st) == SQLITE_ROW) {
    it->changed++;
    if (shown++ < 3) {
      jm__buf_printf(names, "%s'%.40s': ", shown > 1 ? "; " : "",
                     sqlite3_column_text(st, 0));
      mask_names(names, sqlite3_column_int64(st, 1), msg_cols,
                 JM__ARRAY_LEN(msg_cols));
    }
  }
  sqlite3_finalize(st);
  return 0;
}

static int conv_diff(vctx *v, const char *id, int64_t *mask) {
  char *m = mask_expr(conv_cols, JM__ARRAY_LEN(conv_cols));
  char *sql = m ? jm__asprintf("SELECT (%s) FROM main.conversations f JOIN "
                               "live.conversations l ON l.id = f.id WHERE "
                               "f.id = ?1",
                               m)
                : NULL;
  free(m);
  if (sql == NULL)
    return jm__errf(v->err, -ENOMEM, "out of memory");
  sqlite3_stmt *st = prep(v, sql);
  free(sql);
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  *mask = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
  sqlite3_finalize(st);
  return 0;
}

/* Records in one side only, both ways.  (Each EXCEPT in its own subquery:
 * compound operators chain left to right, so "a EXCEPT b UNION ALL c EXCEPT
 * a" would take every row of a back out again.) */
static int bad_diff(vctx *v, const char *id, uint64_t *n) {
  sqlite3_stmt *st = prep(
      v, "SELECT (SELECT count(*) FROM (SELECT line, byte_offset, reason FROM"
         " main.bad_lines WHERE conversation_id = ?1 EXCEPT SELECT line,"
         " byte_offset, reason FROM live.bad_lines WHERE conversation_id = ?1))"
         " + (SELECT count(*) FROM (SELECT line, byte_offset, reason FROM"
         " live.bad_lines WHERE conversation_id = ?1 EXCEPT SELECT line,"
         " byte_offset, reason FROM main.bad_lines WHERE"
         " conversation_id = ?1))");
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  *n = sqlite3_step(st) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0)
                                      : 0;
  sqlite3_finalize(st);
  return 0;
}

/* Compare the folded conversation (main) with the mirror (live). */
static int compare(vctx *v, const char *id, const vfile *vf, uint64_t offset,
                   uint64_t lines, jm_verify_item *it) {
  jm__buf d = {0}, miss = {0}, extra = {0}, chg = {0};
  int64_t cmask = 0;
  uint64_t bad = 0;
  int rc = one_sided(v, id, "main", "live", &it->missing, &miss);
  if (!rc)
    rc = one_sided(v, id, "live", "main", &it->extra, &extra);
  if (!rc)
    rc = changed_msgs(v, id, it, &chg);
  if (!rc)
    rc = conv_diff(v, id, &cmask);
  if (!rc)
    rc = bad_diff(v, id, &bad);
  if (rc)
    goto out;
  if (it->missing)
    jm__buf_printf(&d, "%llu missing message%s (%s); ",
                   (unsigned long long)it->missing, it->missing > 1 ? "s" : "",
                   miss.p);
  if (it->extra)
    jm__buf_printf(&d, "%llu extra message%s (%s); ",
                   (unsigned long long)it->extra, it->extra > 1 ? "s" : "",
                   extra.p);
  if (it->changed)
    jm__buf_printf(&d, "%llu changed message%s (%s); ",
                   (unsigned long long)it->changed, it->changed > 1 ? "s" : "",
                   chg.p);
  if (cmask < 0)
    jm__buf_printf(&d, "conversation row missing; ");
  else if (cmask) {
    jm__buf_printf(&d, "conversation differs in ");
    mask_names(&d, cmask, conv_cols, JM__ARRAY_LEN(conv_cols));
    jm__buf_printf(&d, "; ");
  }
  if (bad)
    jm__buf_printf(&d, "%llu bad-line record%s differ; ",
                   (unsigned long long)bad, bad > 1 ? "s" : "");
  if (offset != vf->src.offset || lines != vf->src.lines)
    jm__buf_printf(&d, "mirror says %llu lines / %llu bytes, file has %llu / "
                   "%llu there; ",
                   (unsigned long long)vf->src.lines,
                   (unsigned long long)vf->src.offset,
                   (unsigned long long)lines, (unsigned long long)offset);
  if (d.len) {
    it->state = JM_VERIFY_DRIFT;
    d.p[d.len - 2] = '\0'; /* drop the last "; " */
    snprintf(it->detail, sizeof it->detail, "%s", d.p);
  }
out:
  jm__buf_release(&d);
  jm__buf_release(&miss);
  jm__buf_release(&extra);
  jm__buf_release(&chg);
  return rc;
}

static int wipe_scratch(vctx *v, const char *id) {
  static const char *const tables[] = {"messages", "bad_lines", "sources",
                                       "conversations"};
  for (size_t i = 0; i < 4; i++) {
    char sql[96];
    snprintf(sql, sizeof sql, "DELETE FROM main.%s WHERE %s = ?1", tables[i],
             i == 3 ? "id" : "conversation_id");
    sqlite3_stmt *st = prep(v, sql);
    if (st == NULL)
      return JM_ESQLITE;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_step(st);
    sqlite3_finalize(st);
  }
  return 0;
}

/* The state once rows are equal: ok, or behind the file. */
static void settle(jm_verify_item *it, const vfile *vf) {
  it->mirror_offset = vf->src.offset;
  it->file_offset = vf->last_lf;
  if (it->state != JM_VERIFY_OK)
    return;
  if (vf->last_lf > vf->src.offset) {
    it->state = JM_VERIFY_BEHIND;
    snprintf(it->detail, sizeof it->detail,
             "mirror has %llu of %llu bytes of complete lines",
             (unsigned long long)vf->src.offset,
             (unsigned long long)vf->last_lf);
  }
}

static int report(vctx *v, jm_verify_item *it) {
  jm_verify_summary *s = v->sum;
  s->checked++;
  if (it->state == JM_VERIFY_OK)
    s->ok++;
  else if (it->state == JM_VERIFY_BEHIND)
    s->behind++;
  else
    s->drift++;
  return v->fn ? v->fn(v->fn_ctx, it) : 0;
}

/* Pipeline sink: fold into scratch, then compare at the end of each file. */
static int v_begin(void *ctx, jm__pl_file *f) {
  vctx *v = ctx;
  jm__fold_init(&v->fold, NULL, NULL);
  v->w.m = &v->scratch;
  v->w.id = f->id;
  v->w.err = v->err;
  return 0;
}

static int v_event(void *ctx, jm__pl_file *f, const jm__fev *ev) {
  vctx *v = ctx;
  (void)f;
  int rc = jm__fold_apply(&v->fold, ev);
  if (rc == 0 && v->fold.mem > ((size_t)8 << 20))
    rc = jm__flush(&v->w, &v->fold);
  return rc == -ENOMEM ? jm__errf(v->err, rc, "out of memory") : rc;
}

static int v_bad(void *ctx, jm__pl_file *f, uint64_t line, uint64_t offset,
                 jm_bad_reason reason, const char *msg) {
  vctx *v = ctx;
  (void)f;
  int rc = jm__fold_bad(&v->fold, line, offset, reason, msg);
  return rc ? jm__errf(v->err, rc, "out of memory") : 0;
}

/* A file folded by a pipeline worker: take its fold as if folded here. */
static int v_folded(void *ctx, jm__pl_file *f, jm__fold *fold,
                    uint64_t events, uint64_t bad) {
  vctx *v = ctx;
  (void)f;
  (void)events;
  (void)bad;
  jm__fold_take(&v->fold, fold); /* v_begin() left it empty */
  return 0;
}

static int v_end(void *ctx, jm__pl_file *f, uint64_t offset, uint64_t lines) {
  vctx *v = ctx;
  vfile *vf = f->user;
  jm__writer w = {&v->scratch, f->id, v->err, NULL};
  int rc = jm__flush(&w, &v->fold);
  jm__fold_release(&v->fold);
  jm_verify_item it;
  memset(&it, 0, sizeof it);
  it.id = f->id;
  if (rc == 0 && vf->why[0]) {
    it.state = JM_VERIFY_DRIFT;
    snprintf(it.detail, sizeof it.detail, "%s", vf->why);
  } else if (rc == 0)
    rc = compare(v, f->id, vf, offset, lines, &it);
  if (rc == 0)
    rc = wipe_scratch(v, f->id);
  settle(&it, vf);
  return rc ? rc : report(v, &it);
}

static int v_io_error(void *ctx, jm__pl_file *f, int err, int begun) {
  vctx *v = ctx;
  if (begun)
    jm__fold_release(&v->fold);
  return jm__errno_f(v->err, -err, "cannot read '%s'", f->path);
}

static void v_progress(void *ctx, uint64_t bytes) {
  vctx *v = ctx;
  v->done += bytes;
  if (v->progress)
    v->progress(v->progress_ctx, v->done, v->total);
}

static int v_canceled(void *ctx) {
  vctx *v = ctx;
  return jm__canceled(v->live);
}

/* Planning: what the mirror says about each file ------------------------------ */

static int source_row(vctx *v, const char *id, vfile *vf) {
  sqlite3_stmt *st = prep(
      v, "SELECT s.byte_offset, s.lines, s.head_hash, s.tail_hash,"
         " (SELECT count(*) FROM live.conversations c WHERE c.id = ?1)"
         " FROM (SELECT 1) LEFT JOIN live.sources s ON"
         " s.conversation_id = ?1");
  if (st == NULL)
    return JM_ESQLITE;
  sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
  if (sqlite3_step(st) == SQLITE_ROW) {
    vf->src.found = sqlite3_column_type(st, 0) != SQLITE_NULL;
    vf->src.offset = (uint64_t)sqlite3_column_int64(st, 0);
    vf->src.lines = (uint64_t)sqlite3_column_int64(st, 1);
    if (sqlite3_column_bytes(st, 2) == 32) {
      memcpy(vf->src.head, sqlite3_column_blob(st, 2), 32);
      vf->src.has_head = 1;
    }
    if (sqlite3_column_bytes(st, 3) == 32) {
      memcpy(vf->src.tail, sqlite3_column_blob(st, 3), 32);
      vf->src.has_tail = 1;
    }
    vf->conv_in_mirror = sqlite3_column_int(st, 4) > 0;
  }
  sqlite3_finalize(st);
  return 0;
}

/* A file with no sources row: merely not ingested yet (behind, or ok when
 * it holds no complete line), unless its conversation has rows anyway. */
static int report_unseen(vctx *v, jm_verify_item *it, const vfile *vf) {
  it->not_ingested = 1;
  it->file_offset = vf->last_lf;
  if (vf->conv_in_mirror) {
    it->state = JM_VERIFY_DRIFT;
    snprintf(it->detail, sizeof it->detail,
             "not in the mirror, but its conversation has rows there");
  } else if (vf->last_lf > 0) {
    it->state = JM_VERIFY_BEHIND;
    snprintf(it->detail, sizeof it->detail,
             "not in the mirror yet (0 of %llu bytes of complete lines)",
             (unsigned long long)vf->last_lf);
  }
  return report(v, it);
}

/* Decide what to fold for one file; a verdict without folding goes to fn. */
static int plan_file(vctx *v, const char *id, const char *path, vfile *vf,
                     int *fold_it) {
  *fold_it = 0;
  int rc = source_row(v, id, vf);
  if (rc)
    return rc;
  jm_verify_item it;
  memset(&it, 0, sizeof it);
  it.id = id;
  int fd = jm__open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
  if (fd < 0) {
    if (fd != -ENOENT)
      return jm__errno_f(v->err, -fd, "cannot open '%s'", path);
    if (!vf->conv_in_mirror && !vf->src.found)
      return 0; /* neither side knows it */
    it.state = JM_VERIFY_DRIFT;
    it.file_missing = 1;
    snprintf(it.detail, sizeof it.detail,
             "journal file is missing but the mirror has rows");
    return report(v, &it);
  }
  struct stat st;
  fstat(fd, &st);
  vf->file_size = (uint64_t)st.st_size;
  vf->last_lf = jm__last_lf(fd, vf->file_size);
  if (!vf->src.found) {
    jm__close(fd);
    return report_unseen(v, &it, vf);
  }
  if (vf->file_size < vf->src.offset)
    snprintf(vf->why, sizeof vf->why,
             "file is %llu bytes, smaller than the %llu ingested",
             (unsigned long long)vf->file_size,
             (unsigned long long)vf->src.offset);
  else {
    unsigned char h[32];
    if (vf->src.has_head && (jm__hash_head(fd, vf->src.offset, h) != 0 ||
                             memcmp(h, vf->src.head, 32) != 0))
      snprintf(vf->why, sizeof vf->why,
               "first line differs from the one ingested");
    else if (vf->src.has_tail && (jm__hash_tail(fd, vf->src.offset, h) != 0 ||
                                  memcmp(h, vf->src.tail, 32) != 0))
      snprintf(vf->why, sizeof vf->why,
               "bytes before offset %llu differ from those ingested",
               (unsigned long long)vf->src.offset);
  }
  jm__close(fd);
  *fold_it = 1;
  return 0;
}

/* Setup ------------------------------------------------------------------------ */

static int open_scratch(vctx *v, jm_error *err) {
  jm_mirror *s = &v->scratch;
  memset(s, 0, sizeof *s);
  s->lock_fd = -1;
  s->root = v->live->root;
  s->journal_dir = v->live->journal_dir;
  s->max_line = v->live->max_line;
  s->db_path = jm__strdup("(verify scratch)");
  if (s->db_path == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  int rc = jm__db_open("", SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                               SQLITE_OPEN_URI, &s->db, err);
  if (rc == 0)
    rc = jm__exec(s, "PRAGMA foreign_keys = OFF; PRAGMA journal_mode = OFF;"
                     " PRAGMA synchronous = OFF", err);
  if (rc == 0)
    rc = jm__migrate(s->db, jm__migrations, jm__n_migrations, s->db_path, err);
  if (rc)
    return rc;
  char *uri = jm__asprintf("file:%s?mode=ro", v->live->db_path);
  sqlite3_stmt *st = NULL;
  if (uri == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  if (sqlite3_prepare_v2(s->db, "ATTACH DATABASE ?1 AS live", -1, &st,
                         NULL) == SQLITE_OK) {
    sqlite3_bind_text(st, 1, uri, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = jm__errf(err, JM_ESQLITE, "cannot open mirror '%s' to verify: %s",
                    v->live->db_path, sqlite3_errmsg(s->db));
  } else
    rc = jm__sql_err(s, err, "cannot attach mirror");
  sqlite3_finalize(st);
  free(uri);
  return rc;
}

static void close_scratch(vctx *v) {
  jm__finalize_all(&v->scratch);
  if (v->scratch.db)
    sqlite3_close(v->scratch.db);
  free(v->scratch.db_path);
}

typedef struct idlist {
  char **ids;
  size_t n, cap;
} idlist;

static int collect(void *ctx, const char *id) {
  idlist *l = ctx;
  if (l->n == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 256;
    char **p = realloc(l->ids, cap * sizeof *p);
    if (p == NULL)
      return -ENOMEM;
    l->ids = p;
    l->cap = cap;
  }
  if ((l->ids[l->n] = jm__strdup(id)) == NULL)
    return -ENOMEM;
  l->n++;
  return 0;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Does journal/ or the mirror know this conversation? */
static int known(vctx *v, const char *id) {
  char *path = jm_journal_path(v->live->root, id);
  if (path == NULL)
    return jm__errf(v->err, -ENOMEM, "out of memory");
  struct stat st;
  int have = lstat(path, &st) == 0 || errno != ENOENT;
  vfile vf;
  memset(&vf, 0, sizeof vf);
  int rc = have ? 0 : source_row(v, id, &vf);
  if (rc == 0 && !have && !vf.src.found && !vf.conv_in_mirror)
    rc = jm__errf(v->err, -ENOENT,
                  "no conversation '%s': no journal file '%s' and nothing "
                  "in the mirror '%s'",
                  id, path, v->live->db_path);
  free(path);
  return rc;
}

/* Every conversation: the files, plus ids the mirror has without a file. */
static int all_ids(vctx *v, idlist *l) {
  int rc = jm_journal_scan(v->live->root, collect, l, NULL, v->err);
  if (rc == -ENOENT) {
    jm_error_clear(v->err);
    rc = 0;
  }
  if (rc)
    return rc;
  sqlite3_stmt *st = prep(v, "SELECT id FROM live.conversations ORDER BY id");
  if (st == NULL)
    return JM_ESQLITE;
  size_t nfiles = l->n;
  while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
    const char *id = (const char *)sqlite3_column_text(st, 0);
    if (nfiles == 0 || !bsearch(&id, l->ids, nfiles, sizeof *l->ids, cmp_str))
      rc = collect(l, id);
  }
  sqlite3_finalize(st);
  return rc;
}

/* Ids asked for by name: each once (sorted), and each known to journal/ or
 * to the mirror, or the error says which is not. */
static int named_ids(vctx *v, const char *const *ids, size_t n, idlist *l) {
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < n; i++)
    if ((rc = jm_id_check(ids[i], strlen(ids[i]), v->err)) == 0)
      rc = collect(l, ids[i]);
  if (rc)
    return rc == -ENOMEM ? jm__errf(v->err, rc, "out of memory") : rc;
  if (l->n > 1)
    qsort(l->ids, l->n, sizeof *l->ids, cmp_str);
  size_t k = 0;
  for (size_t i = 0; i < l->n; i++) {
    if (k > 0 && strcmp(l->ids[k - 1], l->ids[i]) == 0)
      free(l->ids[i]);
    else
      l->ids[k++] = l->ids[i];
  }
  l->n = k;
  for (size_t i = 0; rc == 0 && i < l->n; i++)
    rc = known(v, l->ids[i]);
  return rc;
}

int jm_mirror_verify(jm_mirror *m, const char *const *ids, size_t n_ids,
                     int threads, jm_verify_fn fn, void *fn_ctx,
                     jm_progress_fn progress, void *progress_ctx,
                     jm_verify_summary *sum, jm_error *err) {
  jm_verify_summary tmp;
  if (sum == NULL)
    sum = &tmp;
  memset(sum, 0, sizeof *sum);
  vctx v;
  memset(&v, 0, sizeof v);
  v.live = m;
  v.err = err;
  v.fn = fn;
  v.fn_ctx = fn_ctx;
  v.sum = sum;
  v.progress = progress;
  v.progress_ctx = progress_ctx;
  idlist l = {0};
  jm__pl_file *files = NULL;
  vfile *vfs = NULL;
  size_t nf = 0;
  int rc = open_scratch(&v, err);
  if (rc == 0)
    rc = jm__exec(&v.scratch, "BEGIN", err); /* one snapshot of the mirror */
  if (rc == 0 && n_ids > 0)
    rc = named_ids(&v, ids, n_ids, &l);
  else if (rc == 0)
    rc = all_ids(&v, &l);
  if (rc == 0) {
    files = calloc(l.n ? l.n : 1, sizeof *files);
    vfs = calloc(l.n ? l.n : 1, sizeof *vfs);
    if (!files || !vfs)
      rc = jm__errf(err, -ENOMEM, "out of memory");
  }
  for (size_t i = 0; rc == 0 && i < l.n; i++) {
    char *path = jm_journal_path(m->root, l.ids[i]);
    int fold_it = 0;
    if (path == NULL)
      rc = jm__errf(err, -ENOMEM, "out of memory");
    else
      rc = plan_file(&v, l.ids[i], path, &vfs[nf], &fold_it);
    if (rc == 0 && fold_it) {
      uint64_t upto = vfs[nf].why[0] ? 0 : vfs[nf].src.offset;
      files[nf] = (jm__pl_file){l.ids[i], path, upto, 0, &vfs[nf]};
      v.total += upto;
      nf++;
    } else
      free(path);
  }
  jm__pl_sink sink = {&v,         v_begin,    v_event,    v_bad,   v_end,
                      v_io_error, v_progress, v_canceled, v_folded};
  if (rc == 0 && nf > 0) {
    int t = threads > 0 ? threads : (int)uv_available_parallelism();
    jm__set_aux(m, v.scratch.db);
    rc = jm__pipeline_run(files, nf, t > 0 ? t : 1, m->max_line, &sink);
    jm__set_aux(m, NULL);
    if (rc == -ENOMEM)
      jm__errf(err, rc, "out of memory");
    if (rc == JM_ECANCELED || (rc && jm__canceled(m)))
      rc = jm__errf(err, JM_ECANCELED, "verify canceled");
  }
  jm__fold_release(&v.fold);
  if (v.scratch.db)
    sqlite3_exec(v.scratch.db, "ROLLBACK", NULL, NULL, NULL);
  for (size_t i = 0; i < nf; i++)
    free(files[i].path);
  free(files);
  free(vfs);
  for (size_t i = 0; i < l.n; i++)
    free(l.ids[i]);
  free(l.ids);
  close_scratch(&v);
  return rc;
}

int jm_mirror_check_integrity(jm_mirror *m, char *detail, size_t cap) {
  sqlite3_stmt *st = NULL;
  int ok = 0;
  if (sqlite3_prepare_v2(m->db, "PRAGMA quick_check", -1, &st, NULL) ==
      SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW) {
      const char *r = (const char *)sqlite3_column_text(st, 0);
      ok = r && strcmp(r, "ok") == 0;
      snprintf(detail, cap, "%s", r ? r : "no answer");
    } else
      snprintf(detail, cap, "%s", sqlite3_errmsg(m->db));
  } else
    snprintf(detail, cap, "%s", sqlite3_errmsg(m->db));
  sqlite3_finalize(st);
  /* A database that cannot even be read (permissions, a read-only file
   * system, I/O) is not known to be corrupt: say so, do not rebuild. */
  int ec = sqlite3_errcode(m->db) & 0xff;
  if (!ok && ec != SQLITE_OK && ec != SQLITE_ROW && ec != SQLITE_DONE &&
      ec != SQLITE_CORRUPT && ec != SQLITE_NOTADB)
    return -1;
  return ok;
}
