/*
 * catchup.c - bring the whole mirror up to date with journal/.
 *
 * What the daemon does at start, on SIGHUP and on its long timer, and what
 * `jmirror ingest` does without a daemon: list journal/, compare each file's
 * stat with what the mirror recorded (one query loads every source row), and
 * ingest only the files that changed; an unchanged file costs a stat and
 * nothing else.  Conversations whose file is gone lose their rows.
 * Files are ingested in slices (limits) so that one huge file cannot hold a
 * transaction for long.
 */
#include "mirror_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

typedef struct known {
  char *id;
  uint64_t offset; /* ingested */
  uint64_t size;
  int64_t dev, ino, mtime_ns;
  int seen; /* a file exists for it */
} known;

typedef struct cu {
  jm_mirror *m;
  const jm_ingest_limits *lim;
  jm_catchup_stats *st;
  jm_error *err;
  known *k;
  size_t nk;
  jm_progress_fn progress;
  void *progress_ctx;
  uint64_t nfiles_done;
  int (*on_file)(void *ctx, const jm_file_status *f); /* jm_mirror_changed */
  void (*on_removed)(void *ctx, const char *id);
  void *on_ctx;
} cu;

static int cmp_known(const void *a, const void *b) {
  return strcmp(((const known *)a)->id, ((const known *)b)->id);
}

static int load_known(cu *c) {
  sqlite3_stmt *st;
  const char *sql =
      "SELECT c.id, s.file_size, s.file_dev, s.file_ino, s.file_mtime_ns,"
      " s.byte_offset"
      " FROM conversations c LEFT JOIN sources s ON s.conversation_id = c.id"
      " ORDER BY c.id";
  if (sqlite3_prepare_v2(c->m->db, sql, -1, &st, NULL) != SQLITE_OK)
    return jm__sql_err(c->m, c->err, "cannot read sources");
  size_t cap = 0;
  int rc = 0;
  while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
    if (c->nk == cap) {
      cap = cap ? cap * 2 : 1024;
      known *k = realloc(c->k, cap * sizeof *k);
      if (k == NULL) {
        rc = jm__errf(c->err, -ENOMEM, "out of memory");
        break;
      }
      c->k = k;
    }
    known *k = &c->k[c->nk];
    k->id = jm__strdup((const char *)sqlite3_column_text(st, 0));
    if (k->id == NULL) {
      rc = jm__errf(c->err, -ENOMEM, "out of memory");
      break;
    }
    k->size = (uint64_t)sqlite3_column_int64(st, 1);
    k->dev = sqlite3_column_int64(st, 2);
    k->ino = sqlite3_column_int64(st, 3);
    k->mtime_ns = sqlite3_column_int64(st, 4);
    k->offset = (uint64_t)sqlite3_column_int64(st, 5);
    k->seen = 0;
    c->nk++;
  }
  sqlite3_finalize(st);
  if (rc == 0 && c->nk > 1)
    qsort(c->k, c->nk, sizeof *c->k, cmp_known); /* C collation, as ids */
  return rc;
}

static int same_stat(const known *k, const struct stat *st) {
  jm__file_state fs;
  jm__file_state_of(st, &fs);
  return k->size == fs.size && k->dev == fs.dev && k->ino == fs.ino &&
         k->mtime_ns == fs.mtime_ns;
}

int jm__catch_up_one(jm_mirror *m, const char *id,
                     const jm_ingest_limits *lim, jm_catchup_stats *st,
                     jm_error *err) {
  jm_ingest_result r;
  do {
    int rc = jm_mirror_ingest(m, id, lim, &r, err);
    if (rc)
      return rc;
    st->events += r.events;
    st->bad_lines += r.bad_lines;
    st->bytes += r.bytes;
    st->replayed += r.replayed;
    st->removed += r.removed;
  } while (r.more);
  if (r.unchanged)
    st->unchanged++;
  else if (!r.removed)
    st->ingested++;
  return 0;
}

/* Does the file of `id` need reading?  Marks the known entry as seen and
 * fills *fs. */
static int changed(cu *c, const char *id, jm_file_status *fs) {
  known key = {(char *)id, 0, 0, 0, 0, 0, 0};
  known *k = c->nk ? bsearch(&key, c->k, c->nk, sizeof *c->k, cmp_known)
                   : NULL;
  c->st->files++;
  if (c->progress)
    c->progress(c->progress_ctx, ++c->nfiles_done, 0);
  memset(fs, 0, sizeof *fs);
  fs->id = id;
  char *path = jm_journal_path(c->m->root, id);
  struct stat sb;
  int have = path && lstat(path, &sb) == 0;
  free(path);
  fs->size = have ? (uint64_t)sb.st_size : 0;
  if (k != NULL) {
    k->seen = 1;
    fs->offset = k->offset;
  }
  fs->changed = !(k != NULL && have && same_stat(k, &sb));
  if (!fs->changed)
    c->st->unchanged++;
  return fs->changed;
}

static int visit_ingest(void *ctx, const char *id) {
  cu *c = ctx;
  jm_file_status fs;
  return changed(c, id, &fs)
             ? jm__catch_up_one(c->m, id, c->lim, c->st, c->err)
             : 0;
}

static int visit_list(void *ctx, const char *id) {
  cu *c = ctx;
  jm_file_status fs;
  changed(c, id, &fs);
  return c->on_file(c->on_ctx, &fs);
}

/* Rows whose file is gone: remove them.  Not when journal/ itself is
 * missing (the scan failed first): that is an unmounted disk or a restore
 * in progress, not a deletion. */
static int forget_unseen(cu *c) {
  int rc = 0;
  for (size_t i = 0; rc == 0 && i < c->nk; i++)
    if (!c->k[i].seen) {
      /* The id comes from the mirror's own rows: no id check here. */
      int had_rows;
      rc = jm__forget(c->m, c->k[i].id, &had_rows, c->err);
      c->st->removed += rc == 0;
      if (rc == 0 && c->on_removed)
        c->on_removed(c->on_ctx, c->k[i].id);
    }
  return rc;
}

static void cu_free(cu *c) {
  for (size_t i = 0; i < c->nk; i++)
    free(c->k[i].id);
  free(c->k);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int count_backlog(void *ctx, const jm_file_status *f) {
  uint64_t *b = ctx;
  if (f->changed && f->size > f->offset)
    *b += f->size - f->offset;
  return 0;
}

int jm_mirror_catch_up(jm_mirror *m, const char *const *ids, size_t n_ids,
                       const jm_ingest_limits *lim, jm_progress_fn progress,
                       void *progress_ctx, jm_catchup_stats *st,
                       jm_error *err) {
  jm_catchup_stats tmp;
  if (st == NULL)
    st = &tmp;
  memset(st, 0, sizeof *st);
  if (!jm_mirror_locked(m))
    return jm__errf(err, JM_EUSAGE, "catch-up needs the mirror's writer lock");
  double t0 = now_s();
  if (n_ids > 0) {
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n_ids; i++) {
      st->files++;
      rc = jm__catch_up_one(m, ids[i], lim, st, err);
      if (progress)
        progress(progress_ctx, i + 1, 0);
    }
    st->seconds = now_s() - t0;
    return rc;
  }
  cu c = {m, lim, st, err, NULL, 0, progress, progress_ctx, 0,
          NULL, NULL, NULL};
  int rc = load_known(&c);
  uint64_t backlog = 0;
  if (rc == 0)
    rc = jm_mirror_changed(m, count_backlog, NULL, &backlog, NULL, err);
  /* A big backlog: index the new messages in bulk afterwards rather than
   * one by one inside every ingest transaction. */
  if (rc == 0 && backlog > JM__DEFER_INDEX_BYTES)
    rc = jm_mirror_index_defer(m, err) < 0 ? -1 : 0;
  if (rc == 0)
    rc = jm_journal_scan(m->root, visit_ingest, &c, &st->ignored_files, err);
  if (rc == 0)
    rc = forget_unseen(&c);
  cu_free(&c);
  st->seconds = now_s() - t0;
  return rc;
}

int jm_mirror_changed(jm_mirror *m,
                      int (*on_file)(void *ctx, const jm_file_status *f),
                      void (*on_removed)(void *ctx, const char *id),
                      void *ctx, jm_catchup_stats *st, jm_error *err) {
  jm_catchup_stats tmp;
  if (st == NULL)
    st = &tmp;
  memset(st, 0, sizeof *st);
  if (!jm_mirror_locked(m))
    return jm__errf(err, JM_EUSAGE, "reconcile needs the mirror's writer lock");
  double t0 = now_s();
  cu c = {m, NULL, st, err, NULL, 0, NULL, NULL, 0,
          on_file, on_removed, ctx};
  int rc = load_known(&c);
  if (rc == 0)
    rc = jm_journal_scan(m->root, visit_list, &c, &st->ignored_files, err);
  if (rc == 0)
    rc = forget_unseen(&c);
  cu_free(&c);
  st->seconds = now_s() - t0;
  return rc;
}

/* Read-only: which conversations does the mirror not have as they are now?
 * fn(ctx, id) for every changed or new file, and for every conversation
 * whose file is gone.  No lock: nothing is written. */
typedef struct stale_ctx {
  cu c;
  int (*fn)(void *ctx, const char *id);
  void *ctx;
} stale_ctx;

static int visit_stale(void *ctx, const char *id) {
  stale_ctx *x = ctx;
  jm_file_status fs;
  return changed(&x->c, id, &fs) ? x->fn(x->ctx, id) : 0;
}

int jm__mirror_stale(jm_mirror *m, int (*fn)(void *ctx, const char *id),
                     void *ctx, jm_error *err) {
  jm_catchup_stats st;
  memset(&st, 0, sizeof st);
  stale_ctx x = {{m, NULL, &st, err, NULL, 0, NULL, NULL, 0, NULL, NULL, NULL},
                 fn, ctx};
  int rc = load_known(&x.c);
  if (rc == 0)
    rc = jm_journal_scan(m->root, visit_stale, &x, NULL, err);
  if (rc == -ENOENT) { /* no journal/: nothing to read, nothing to remove */
    jm_error_clear(err);
    rc = 0;
  } else
    for (size_t i = 0; rc == 0 && i < x.c.nk; i++)
      if (!x.c.k[i].seen)
        rc = fn(ctx, x.c.k[i].id);
  cu_free(&x.c);
  return rc;
}
