/*
 * replay.c - replaying conversations from scratch: one, or all of them.
 *
 * jm_mirror_replay(): one conversation, in the live mirror, in one
 * transaction: its rows are wiped (one cascading DELETE) and its file is
 * folded from byte 0.  Readers see the old rows or the new, never a mix.
 *
 * jm_mirror_rebuild(): every file in journal/ into a fresh database file
 * beside the mirror ("<db>.rebuild"), built without a rollback journal and
 * without syncs (nobody can see it, a crash just leaves a file to delete),
 * then synced once and copied into the live mirror with SQLite's online
 * backup API in a single step.  Never rename a file over a live database:
 * a reader's -wal/-shm would then meet a different database.
 *
 * Both feed the parallel pipeline (pipeline.c) into the same fold and the
 * same row writer as incremental ingest (ingest.c).
 */
#include "mirror_int.h"
#include "migrate.h"
#include "pipeline.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#define FLUSH_MEM ((size_t)8 << 20)

typedef struct file_info {
  jm__file_state fs; /* stat snapshot; offset/lines filled at the end */
} file_info;

typedef struct sink_ctx {
  jm_mirror *owner;      /* the mirror asked to do this (cancel flag) */
  jm_mirror *m;          /* rows go here (owner, or a scratch database) */
  jm_error *err;
  int wipe;              /* wipe each conversation first (in place) */
  jm__fold fold;
  jm__writer w;
  jm__kept kept;         /* in place: the rows this replay keeps */
  jm_rebuild_stats *stats;
  jm_ingest_result *res;
  jm_progress_fn progress;
  void *progress_ctx;
  uint64_t done, total;
} sink_ctx;

static int s_begin(void *ctx, jm__pl_file *f) {
  sink_ctx *s = ctx;
  jm__fold_init(&s->fold, NULL, NULL);
  s->w.m = s->m;
  s->w.id = f->id;
  s->w.err = s->err;
  s->w.kept = NULL;
  /* In place: the fold's rows replace the old ones as a diff (ingest.c). */
  return s->wipe ? jm__diff_begin(&s->w, &s->kept) : 0;
}

static int s_event(void *ctx, jm__pl_file *f, const jm__fev *ev) {
  sink_ctx *s = ctx;
  (void)f;
  int rc = jm__fold_apply(&s->fold, ev);
  if (rc == -ENOMEM)
    return jm__errf(s->err, rc, "out of memory");
  if (rc == 0 && s->fold.mem > FLUSH_MEM)
    rc = jm__flush(&s->w, &s->fold);
  s->stats->events++;
  return rc;
}

static int s_bad(void *ctx, jm__pl_file *f, uint64_t line, uint64_t offset,
                 jm_bad_reason reason, const char *msg) {
  sink_ctx *s = ctx;
  (void)f;
  s->stats->bad_lines++;
  int rc = jm__fold_bad(&s->fold, line, offset, reason, msg);
  return rc ? jm__errf(s->err, rc, "out of memory") : 0;
}

static int s_end(void *ctx, jm__pl_file *f, uint64_t offset, uint64_t lines) {
  sink_ctx *s = ctx;
  file_info *fi = f->user;
  fi->fs.offset = offset;
  fi->fs.lines = lines;
  int rc = 0;
  int fd = jm__open(f->path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK, 0);
  if (fd < 0)
    rc = jm__errno_f(s->err, -fd, "cannot open '%s'", f->path);
  else
    rc = jm__commit_conversation(&s->w, &s->fold, fd, &fi->fs);
  jm__close(fd);
  jm__fold_release(&s->fold);
  jm__kept_free(&s->kept);
  s->stats->conversations++;
  if (s->res) {
    s->res->offset = offset;
    s->res->lines = lines;
    s->res->bytes = offset;
  }
  return rc;
}

static int s_io_error(void *ctx, jm__pl_file *f, int err, int begun) {
  sink_ctx *s = ctx;
  if (begun) {
    jm__fold_release(&s->fold);
    jm__kept_free(&s->kept);
  }
  if (err == -ENOENT && s->wipe == 0)
    return 0; /* rebuild: the file went away since the scan; skip it */
  return jm__errno_f(s->err, -err, "cannot read '%s'", f->path);
}

/* A file folded by a pipeline worker: take its fold as if folded here. */
static int s_folded(void *ctx, jm__pl_file *f, jm__fold *fold,
                    uint64_t events, uint64_t bad) {
  sink_ctx *s = ctx;
  (void)f;
  jm__fold_take(&s->fold, fold); /* begin() left it empty */
  s->stats->events += events;
  s->stats->bad_lines += bad;
  return 0;
}

static void s_progress(void *ctx, uint64_t bytes) {
  sink_ctx *s = ctx;
  s->done += bytes;
  s->stats->bytes += bytes;
  if (s->progress)
    s->progress(s->progress_ctx, s->done, s->total);
}

static int s_canceled(void *ctx) {
  sink_ctx *s = ctx;
  return jm__canceled(s->owner);
}

static jm__pl_sink make_sink(sink_ctx *s) {
  jm__pl_sink k = {s,          s_begin,    s_event,    s_bad,     s_end,
                   s_io_error, s_progress, s_canceled, s_folded};
  return k;
}


static int default_threads(int threads) {
  if (threads > 0)
    return threads;
  unsigned n = uv_available_parallelism();
  return n > 0 ? (int)n : 1;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of the whole process, every thread, user and system. */
static double cpu_s(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return 0;
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* One conversation ------------------------------------------------------------ */

int jm_mirror_replay(jm_mirror *m, const char *id, int threads,
                     jm_ingest_result *res, jm_error *err) {
  jm_ingest_result tmp;
  if (res == NULL)
    res = &tmp;
  memset(res, 0, sizeof *res);
  if (!jm_mirror_locked(m))
    return jm__errf(err, JM_EUSAGE, "replay needs the mirror's writer lock");
  int rc = jm__writable(m, err);
  if (rc == 0)
    rc = jm_id_check(id, strlen(id), err);
  if (rc)
    return rc;
  char *path = jm_journal_path(m->root, id);
  if (path == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  struct stat st;
  int e = lstat(path, &st) != 0 ? errno : S_ISREG(st.st_mode) ? 0 : ENOENT;
  if (e != 0) {
    free(path);
    if (e != ENOENT)
      return jm__errno_f(err, e, "cannot stat journal of '%s'", id);
    if (!jm__journal_dir_present(m))
      return jm__errf(err, -ENOENT, "journal directory '%s' is missing: "
                      "nothing removed", m->journal_dir);
    int had_rows;
    res->removed = 1;
    return jm__forget(m, id, &had_rows, err);
  }
  file_info fi;
  memset(&fi.fs, 0, sizeof fi.fs);
  jm__file_state_of(&st, &fi.fs);
  jm__pl_file f = {(char *)id, path, fi.fs.size, 0, &fi};
  jm_rebuild_stats stats = {0};
  sink_ctx s = {0};
  s.owner = m;
  s.m = m;
  s.err = err;
  s.wipe = 1;
  s.stats = &stats;
  s.res = res;
  jm__pl_sink sink = make_sink(&s);
  rc = jm__exec(m, "BEGIN IMMEDIATE", err);
  if (rc == 0) {
    int t = default_threads(threads);
    if (fi.fs.size < ((uint64_t)2 << 20))
      t = 1; /* a small file is not worth the threads */
    rc = jm__pipeline_run(&f, 1, t, m->max_line, &sink);
    if (rc == -ENOMEM)
      jm__errf(err, rc, "out of memory");
    if (rc == JM_ECANCELED)
      jm__errf(err, rc, "replay of '%s' canceled", id);
    rc = rc ? rc : jm__exec(m, "COMMIT", err);
    if (rc)
      jm__exec(m, "ROLLBACK", NULL);
  }
  jm__fold_release(&s.fold);
  jm__kept_free(&s.kept);
  res->events = stats.events;
  res->bad_lines = stats.bad_lines;
  res->file_size = fi.fs.size;
  res->replayed = 1;
  free(path);
  return rc;
}

/* Everything ---------------------------------------------------------------------- */

typedef struct scan {
  const char *root;
  jm__pl_file *files;
  file_info *info;
  size_t n, cap;
  uint64_t total;
  int err;
} scan;

static int scan_one(void *ctx, const char *id) {
  scan *sc = ctx;
  if (sc->n == sc->cap) {
    size_t cap = sc->cap ? sc->cap * 2 : 1024;
    jm__pl_file *f = realloc(sc->files, cap * sizeof *f);
    if (f)
      sc->files = f;
    file_info *i = realloc(sc->info, cap * sizeof *i);
    if (i)
      sc->info = i;
    if (!f || !i)
      return sc->err = -ENOMEM;
    sc->cap = cap;
  }
  char *path = jm_journal_path(sc->root, id);
  char *cid = jm__strdup(id);
  struct stat st;
  if (!path || !cid) {
    free(path);
    free(cid);
    return sc->err = -ENOMEM;
  }
  if (lstat(path, &st) != 0) { /* vanished since readdir: not there */
    free(path);
    free(cid);
    return 0;
  }
  memset(&sc->info[sc->n].fs, 0, sizeof sc->info[sc->n].fs);
  jm__file_state_of(&st, &sc->info[sc->n].fs);
  sc->files[sc->n] = (jm__pl_file){cid, path, (uint64_t)st.st_size, 0, NULL};
  sc->total += (uint64_t)st.st_size;
  sc->n++;
  return 0;
}

static void scan_free(scan *sc) {
  for (size_t i = 0; i < sc->n; i++) {
    free(sc->files[i].id);
    free(sc->files[i].path);
  }
  free(sc->files);
  free(sc->info);
}

/* Open the scratch database, tuned for one bulk load nobody else sees. */
/* The online backup cannot change the page size of a WAL database: the
 * scratch file takes the live one's (set before any table exists).  The
 * value comes from SQLite, an integer: PRAGMA takes no bound parameters. */
static int same_page_size(jm_mirror *m, jm_mirror *fresh, jm_error *err) {
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(m->db, "PRAGMA page_size", -1, &st, NULL) !=
      SQLITE_OK)
    return jm__sql_err(m, err, "cannot read the mirror's page size");
  int size = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
  sqlite3_finalize(st);
  if (size < 512 || size > 65536)
    return 0; /* unknown: SQLite's default */
  char sql[48];
  snprintf(sql, sizeof sql, "PRAGMA page_size = %d", size);
  return jm__exec(fresh, sql, err);
}

static int open_scratch(jm_mirror *m, jm_mirror *fresh, jm_error *err) {
  memset(fresh, 0, sizeof *fresh);
  fresh->lock_fd = -1;
  fresh->root = m->root;
  fresh->journal_dir = m->journal_dir;
  fresh->max_line = m->max_line;
  fresh->db_path = jm_mirror_sibling(m->db_path, ".rebuild");
  if (fresh->db_path == NULL)
    return jm__errf(err, -ENOMEM, "out of memory");
  jm__remove_scratch(m->db_path); /* left by a rebuild that was killed */
  int rc = jm__db_open(fresh->db_path,
                       SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &fresh->db,
                       err);
  if (rc == 0)
    rc = jm__exec(fresh,
                  "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                  " PRAGMA locking_mode = EXCLUSIVE;"
                  " PRAGMA foreign_keys = OFF; PRAGMA cache_size = -2048",
                  err);
  if (rc == 0)
    rc = same_page_size(m, fresh, err);
  if (rc == 0)
    rc = jm__migrate(fresh->db, jm__migrations, jm__n_migrations,
                     fresh->db_path, err);
  if (rc == 0 && jm__record_max_line(fresh->db, m->max_line) != 0)
    rc = jm__sql_err(fresh, err, "cannot record the maximum line length");
  return rc;
}

static void close_scratch(jm_mirror *fresh) {
  jm__finalize_all(fresh);
  if (fresh->db)
    sqlite3_close(fresh->db);
  fresh->db = NULL;
  if (fresh->db_path)
    unlink(fresh->db_path);
  free(fresh->db_path);
  fresh->db_path = NULL;
}

/* Sync the scratch file, then copy it into the live mirror in one step. */
static int swap_in(jm_mirror *m, jm_mirror *fresh, jm_error *err) {
  /* No sync of the scratch file: it is read from the page cache and
   * deleted; the live mirror's own commit is what counts. */
  sqlite3_backup *b = sqlite3_backup_init(m->db, "main", fresh->db, "main");
  if (b == NULL)
    return jm__sql_err(m, err, "cannot start copying the rebuilt mirror");
  int s = sqlite3_backup_step(b, -1);
  sqlite3_backup_finish(b);
  if (s != SQLITE_DONE)
    return jm__errf(err, s == SQLITE_FULL ? -ENOSPC : JM_ESQLITE,
                    "mirror '%s': cannot copy the rebuilt mirror in: %s",
                    m->db_path, sqlite3_errstr(s));
  jm__finalize_all(m); /* the schema was replaced under them */
  sqlite3_exec(m->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
  return 0;
}

int jm_mirror_rebuild(jm_mirror *m, int threads, jm_progress_fn progress,
                      void *progress_ctx, jm_rebuild_stats *stats,
                      jm_error *err) {
  jm_rebuild_stats tmp;
  if (stats == NULL)
    stats = &tmp;
  memset(stats, 0, sizeof *stats);
  if (!jm_mirror_locked(m))
    return jm__errf(err, JM_EUSAGE, "rebuild needs the mirror's writer lock");
  double t0 = now_s(), cpu0 = cpu_s();
  scan sc = {0};
  sc.root = m->root;
  int rc = jm_journal_scan(m->root, scan_one, &sc, &stats->ignored_files, err);
  if (rc == -ENOENT) { /* no journal/ at all: a restore in progress, a
                        * disk not mounted, a wrong --root; never "empty" */
    jm_error_clear(err);
    rc = jm__errf(err, -ENOENT,
                  "journal directory '%s' is missing: nothing replayed, the "
                  "mirror is left as it is (restore journal/, or create it "
                  "empty for an empty mirror)",
                  m->journal_dir);
  }
  if (rc == 0 && sc.err)
    rc = jm__errf(err, sc.err, "out of memory");
  for (size_t i = 0; rc == 0 && i < sc.n; i++)
    sc.files[i].user = &sc.info[i];
  jm_mirror fresh;
  if (rc == 0)
    rc = open_scratch(m, &fresh, err);
  else
    memset(&fresh, 0, sizeof fresh);
  sink_ctx s = {0};
  s.owner = m;
  s.m = &fresh;
  s.err = err;
  s.stats = stats;
  s.progress = progress;
  s.progress_ctx = progress_ctx;
  s.total = sc.total;
  jm__pl_sink sink = make_sink(&s);
  if (rc == 0) {
    jm__set_aux(m, fresh.db);
    rc = jm__exec(&fresh, "BEGIN", err);
  }
  if (rc == 0) {
    rc = jm__pipeline_run(sc.files, sc.n, default_threads(threads),
                          m->max_line, &sink);
    if (rc == -ENOMEM)
      jm__errf(err, rc, "out of memory");
    rc = rc ? rc : jm__exec(&fresh, "COMMIT", err);
    stats->rows_seconds = now_s() - t0;
    stats->rows_cpu_seconds = cpu_s() - cpu0;
  }
  jm__fold_release(&s.fold);
  jm__set_aux(m, NULL);
  if (rc == 0 && jm__canceled(m))
    rc = JM_ECANCELED;
  if (rc == 0)
    rc = swap_in(m, &fresh, err);
  if (rc == 0) { /* replaced whole: now of this schema and maximum */
    m->newer = 0;
    m->built_max_line = 0;
  }
  stats->swap_seconds = now_s() - t0 - stats->rows_seconds;
  close_scratch(&fresh);
  if (rc == JM_ECANCELED || jm__canceled(m))
    rc = jm__errf(err, JM_ECANCELED, "rebuild of '%s' canceled",
                  m->db_path);
  scan_free(&sc);
  stats->seconds = now_s() - t0;
  return rc;
}
