/*
 * test_vfs_faults.c - the mirror under SQLite I/O errors: a disk that
 * fails a write (SQLITE_IOERR), fills up (SQLITE_FULL), or fails a sync.
 *
 * A wrapping VFS is registered as the default before the mirror is opened:
 * every file SQLite opens (the mirror, its -wal, the rebuild's scratch
 * database, verify's temporary one) goes through it, and xWrite / xSync
 * fail on cue.  Each scenario (an ingest of new lines, the same with a
 * checkpoint in its commit, the same with a page cache so small that pages
 * spill into the WAL mid-transaction, a replay of one conversation, a
 * catch-up of several, a full rebuild) is first run clean to count its
 * writes and syncs; then, for every one of them (or an even sample when
 * there are many), a fresh copy of the starting state runs the scenario
 * with that call failing, and:
 *
 *   - a failed call returns an error that names the mirror and the cause
 *     ("disk I/O error", or -ENOSPC "database or disk is full");
 *   - whether it failed or not, every conversation's rows and committed
 *     offset are exactly as before the call or exactly as after a clean
 *     run (a failure rolls back; a failure after COMMIT, in a checkpoint,
 *     loses nothing);
 *   - the same handle, the fault gone, retries and ends exactly as a clean
 *     run does, verify is clean, and a reopened mirror says the same;
 *   - PRAGMA integrity_check is ok all along.
 *
 * The faults are "sticky" for a full disk (every later write fails too)
 * and one-shot for an I/O error (the next write works).
 */
#include "mirror_int.h"
#include "mtest.h"
#include "test.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* The faulty VFS.                                                      */

enum { OP_WRITE = 1, OP_SYNC = 2 };

static struct {
  int armed;   /* count calls (and fail when told to) */
  int op;      /* OP_WRITE or OP_SYNC */
  int code;    /* what a failing call returns */
  long pass;   /* calls of `op` that succeed before the first failure */
  int sticky;  /* after the first failure, every later call fails too */
  long calls;  /* calls of `op` seen while armed */
  long fired;  /* calls failed */
} F;

typedef struct ffile {
  sqlite3_file base;  /* pMethods = &fio */
  sqlite3_file *real; /* the default VFS's file, right after this struct */
} ffile;

static sqlite3_vfs *orig_vfs;
static sqlite3_vfs fvfs;

static int fail_now(int op) {
  if (!F.armed || F.op != op)
    return 0;
  F.calls++;
  if (F.calls <= F.pass || (F.fired && !F.sticky))
    return 0;
  F.fired++;
  return 1;
}

#define REAL(f) (((ffile *)(f))->real)

static int f_close(sqlite3_file *f) { return REAL(f)->pMethods->xClose(REAL(f)); }
static int f_read(sqlite3_file *f, void *p, int n, sqlite3_int64 off) {
  return REAL(f)->pMethods->xRead(REAL(f), p, n, off);
}
static int f_write(sqlite3_file *f, const void *p, int n, sqlite3_int64 off) {
  if (fail_now(OP_WRITE))
    return F.code;
  return REAL(f)->pMethods->xWrite(REAL(f), p, n, off);
}
static int f_truncate(sqlite3_file *f, sqlite3_int64 size) {
  return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int f_sync(sqlite3_file *f, int flags) {
  if (fail_now(OP_SYNC))
    return F.code;
  return REAL(f)->pMethods->xSync(REAL(f), flags);
}
static int f_size(sqlite3_file *f, sqlite3_int64 *out) {
  return REAL(f)->pMethods->xFileSize(REAL(f), out);
}
static int f_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int f_unlock(sqlite3_file *f, int l) {
  return REAL(f)->pMethods->xUnlock(REAL(f), l);
}
static int f_reserved(sqlite3_file *f, int *out) {
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int f_fcntl(sqlite3_file *f, int op, void *arg) {
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int f_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int f_devchar(sqlite3_file *f) {
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int f_shm_map(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp) {
  return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, ext, pp);
}
static int f_shm_lock(sqlite3_file *f, int off, int n, int flags) {
  return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void f_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int f_shm_unmap(sqlite3_file *f, int del) {
  return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int f_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp) {
  return REAL(f)->pMethods->xFetch(REAL(f), off, n, pp);
}
static int f_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
  return REAL(f)->pMethods->xUnfetch(REAL(f), off, p);
}

static const sqlite3_io_methods fio = {
  3, f_close, f_read, f_write, f_truncate, f_sync, f_size, f_lock, f_unlock,
  f_reserved, f_fcntl, f_sector, f_devchar, f_shm_map, f_shm_lock,
  f_shm_barrier, f_shm_unmap, f_fetch, f_unfetch,
};

static int f_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *file,
                  int flags, int *out_flags) {
  (void)vfs;
  ffile *f = (ffile *)file;
  f->real = (sqlite3_file *)(f + 1);
  int rc = orig_vfs->xOpen(orig_vfs, name, f->real, flags, out_flags);
  /* The io methods above forward the shm/fetch calls: the real file must
   * have them (the unix VFS's always do). */
  f->base.pMethods = rc == SQLITE_OK && f->real->pMethods &&
                             f->real->pMethods->iVersion >= 3
                         ? &fio
                         : NULL;
  if (rc == SQLITE_OK && f->base.pMethods == NULL && f->real->pMethods) {
    f->real->pMethods->xClose(f->real);
    rc = SQLITE_CANTOPEN;
  }
  return rc;
}

/* Make the faulty VFS the default: everything the mirror opens after this
 * goes through it. */
static void vfs_install(void) {
  if (orig_vfs)
    return;
  orig_vfs = sqlite3_vfs_find(NULL);
  ASSERT(orig_vfs != NULL);
  fvfs = *orig_vfs; /* every other method, and pAppData, stay the real ones */
  fvfs.pNext = NULL;
  fvfs.zName = "jmtest-faulty";
  fvfs.szOsFile = (int)sizeof(ffile) + orig_vfs->szOsFile;
  fvfs.xOpen = f_open;
  ASSERT_EQ(sqlite3_vfs_register(&fvfs, 1), SQLITE_OK);
}

static void arm(int op, int code, long pass, int sticky) {
  memset(&F, 0, sizeof F);
  F.op = op;
  F.code = code;
  F.pass = pass;
  F.sticky = sticky;
  F.armed = 1;
}

static void disarm(void) { F.armed = 0; }

/* ------------------------------------------------------------------ */
/* Journals and states.                                                 */

#define N_CONV 4

static const char *conv_id(int i) { return test_fmt("c%d", i); }

/* Events n0 .. n1-1 of conversation `c`: messages, a streamed answer with
 * deltas, an edit, a delete, a bad line now and then. */
static void events(mt_buf *b, int c, int n0, int n1) {
  for (int n = n0; n < n1; n++) {
    int t = n * 3;
    const char *ts = test_fmt("2026-03-01T%02d:%02d:%02d.%06dZ", t / 3600 % 24,
                              t / 60 % 60, t % 60, n);
    switch (n % 7) {
    case 0:
    case 1:
      mt_printf(b, "{\"type\":\"message\",\"ts\":\"%s\",\"id\":\"u%d\","
                   "\"role\":\"user\",\"content\":\"question %d of c%d: "
                   "%s\"}\n", ts, n, n, c,
                "a reasonably long text so that pages fill up: lorem ipsum "
                "dolor sit amet, 한국어 텍스트, émoji 😀");
      break;
    case 2:
    case 3:
      mt_printf(b, "{\"type\":\"message.delta\",\"ts\":\"%s\",\"id\":\"a%d\","
                   "\"text\":\"part %d \",\"thinking\":\"t%d\"}\n",
                ts, n / 7, n, n);
      break;
    case 4:
      mt_printf(b, "{\"type\":\"message.end\",\"ts\":\"%s\",\"id\":\"a%d\","
                   "\"stop_reason\":\"end_turn\",\"usage\":{\"in\":%d}}\n",
                ts, n / 7, n);
      break;
    case 5:
      if (n % 3 == 0)
        mt_puts(b, "{\"broken\": \n");
      else
        mt_printf(b, "{\"type\":\"message.edited\",\"ts\":\"%s\",\"id\":"
                     "\"u%d\",\"content\":\"edited %d\"}\n", ts, n - 5, n);
      break;
    default:
      mt_printf(b, "{\"type\":\"message.deleted\",\"ts\":\"%s\",\"id\":"
                   "\"u%d\"}\n", ts, n - 6);
      break;
    }
  }
}

static void append_events(const char *root, int c, int n0, int n1) {
  mt_buf b = {0};
  if (n0 == 0)
    mt_printf(&b, "{\"type\":\"conversation.created\",\"ts\":"
                  "\"2026-03-01T00:00:00Z\",\"title\":\"c%d\"}\n", c);
  events(&b, c, n0, n1);
  mt_append(root, conv_id(c), b.p, b.len);
  mt_buf_free(&b);
}

static void copy_file(const char *from, const char *to) {
  size_t n;
  char *p = test_read_file(from, &n);
  if (p == NULL)
    return; /* -wal/-shm may not exist */
  test_write_file(to, p, n);
  free(p);
}

/* The starting state: every conversation with `first` events, ingested,
 * the mirror closed (checkpointed).  Returns the template root. */
static const char *make_template(int first) {
  const char *root = mt_root("template");
  for (int c = 0; c < N_CONV; c++)
    append_events(root, c, 0, first);
  jm_mirror *m = mt_open(root, NULL, 0);
  for (int c = 0; c < N_CONV; c++)
    mt_ingest(m, conv_id(c), NULL);
  jm_mirror_close(m);
  return root;
}

/* A fresh copy of the template, `tag` naming it. */
static const char *copy_template(const char *tpl, const char *tag) {
  const char *root = mt_root(tag);
  for (int c = 0; c < N_CONV; c++)
    copy_file(mt_jpath(tpl, conv_id(c)), mt_jpath(root, conv_id(c)));
  char dir[1200];
  snprintf(dir, sizeof dir, "%s/mirror", root);
  mkdir(dir, 0700);
  static const char *const files[] = {"mirror.db", "mirror.db-wal", "CACHEDIR.TAG"};
  for (size_t i = 0; i < JM__ARRAY_LEN(files); i++)
    copy_file(test_fmt("%s/mirror/%s", tpl, files[i]),
              test_fmt("%s/mirror/%s", root, files[i]));
  return root;
}

/* One conversation's rows and committed offset, rendered exactly. */
static char *conv_dump(const char *db, int c) {
  mt_buf b = {0};
  const char *id = conv_id(c);
  mt_puts(&b, mt_q(db, "SELECT * FROM conversations WHERE id = %Q", id));
  mt_puts(&b, "\n--\n");
  mt_puts(&b, mt_q(db, "SELECT * FROM messages WHERE conversation_id = %Q "
                       "ORDER BY seq", id));
  mt_puts(&b, "\n--\n");
  mt_puts(&b, mt_q(db, "SELECT * FROM bad_lines WHERE conversation_id = %Q "
                       "ORDER BY line", id));
  mt_puts(&b, "\n--\n");
  mt_puts(&b, mt_q(db, "SELECT byte_offset, lines FROM sources WHERE "
                       "conversation_id = %Q", id));
  return b.p ? b.p : calloc(1, 1);
}

static void integrity_ok(const char *db) {
  ASSERT_STR_EQ(mt_q(db, "PRAGMA integrity_check"), "ok");
}

/* ------------------------------------------------------------------ */
/* Scenarios.                                                           */

typedef struct scenario {
  const char *name;
  int first, second;  /* events before / appended before the action */
  int checkpoint;     /* a WAL auto-checkpoint in (almost) every commit */
  int only;           /* -1: lines appended to every conversation; else
                       * only to this one (the one the action is about) */
  int small_cache;    /* a cache of a few pages: writes spill into the WAL
                       * mid-transaction, so faults hit statements, not
                       * only the COMMIT */
  /* The action on the mirror; 0 or an error in err. */
  int (*act)(jm_mirror *m, jm_error *err);
} scenario;

static int act_ingest(jm_mirror *m, jm_error *err) {
  return jm_mirror_ingest(m, conv_id(1), NULL, NULL, err);
}

static int act_replay(jm_mirror *m, jm_error *err) {
  return jm_mirror_replay(m, conv_id(2), 1, NULL, err);
}

static int act_catch_up(jm_mirror *m, jm_error *err) {
  return jm_mirror_catch_up(m, NULL, 0, NULL, NULL, NULL, NULL, err);
}

static int act_rebuild(jm_mirror *m, jm_error *err) {
  return jm_mirror_rebuild(m, 1, NULL, NULL, NULL, err);
}

typedef struct states {
  char *before[N_CONV]; /* the rows before the action */
  char *after[N_CONV];  /* after a clean run */
} states;

static jm_mirror *start(const scenario *s, const char *tpl, const char *tag) {
  const char *root = copy_template(tpl, tag);
  for (int c = 0; c < N_CONV; c++)
    if (s->only < 0 || s->only == c)
      append_events(root, c, s->first, s->first + s->second);
  jm_mirror *m = mt_open(root, NULL, 0);
  if (s->checkpoint)
    ASSERT_OK(jm__exec(m, "PRAGMA wal_autocheckpoint = 2", NULL));
  if (s->small_cache)
    ASSERT_OK(jm__exec(m, "PRAGMA cache_size = 4", NULL));
  return m;
}

/* A clean run: the states before and after, and how many calls of `op`
 * it makes. */
static long clean_run(const scenario *s, const char *tpl, int op, states *st,
                      const char *tag) {
  jm_mirror *m = start(s, tpl, tag);
  const char *db = jm_mirror_db_path(m);
  for (int c = 0; c < N_CONV; c++) {
    free(st->before[c]);
    st->before[c] = conv_dump(db, c);
  }
  jm_error err;
  jm_error_clear(&err);
  arm(op, SQLITE_IOERR, LONG_MAX, 0);
  int rc = s->act(m, &err);
  disarm();
  if (rc != 0)
    test_fail(__FILE__, __LINE__, "%s: clean run failed: %s", s->name, err.msg);
  for (int c = 0; c < N_CONV; c++) {
    free(st->after[c]);
    st->after[c] = conv_dump(db, c);
  }
  jm_mirror_close(m);
  return F.calls;
}

/* Is the message what a user can act on? */
static void check_message(const jm_error *err, int code, const char *db) {
  ASSERT_STR_CONTAINS(err->msg, db);
  if (code == SQLITE_FULL) {
    ASSERT_EQ(err->code, -ENOSPC);
    ASSERT_STR_CONTAINS(err->msg, "database or disk is full");
  } else
    ASSERT_STR_CONTAINS(err->msg, "disk I/O error");
}

/* Every conversation is exactly before or exactly after. */
static int check_states(const char *db, const states *st, const char *what) {
  int changed = 0;
  for (int c = 0; c < N_CONV; c++) {
    char *now = conv_dump(db, c);
    int is_before = strcmp(now, st->before[c]) == 0;
    int is_after = strcmp(now, st->after[c]) == 0;
    if (!is_before && !is_after)
      test_fail(__FILE__, __LINE__, "%s: %s is neither as before nor as "
                "after a clean run:\n%s", what, conv_id(c), now);
    changed += !is_before;
    free(now);
  }
  return changed;
}

static void check_after(const char *db, const states *st, const char *what) {
  for (int c = 0; c < N_CONV; c++) {
    char *now = conv_dump(db, c);
    if (strcmp(now, st->after[c]) != 0)
      test_fail(__FILE__, __LINE__, "%s: after the retry %s differs from a "
                "clean run:\n%s\n-- want --\n%s", what, conv_id(c), now,
                st->after[c]);
    free(now);
  }
}

typedef struct tally {
  long points;    /* fault points tried */
  long failed;    /* calls that returned an error */
  long survived;  /* faults the call absorbed (after COMMIT) */
} tally;

/* Fail call k of `op` with `code`; everything the header promises. */
static void one_point(const scenario *s, const char *tpl, const states *st,
                      int op, int code, int sticky, long k, tally *t) {
  char tag[64];
  snprintf(tag, sizeof tag, "%s-%d-%d-%ld", s->name, op, code, k);
  jm_mirror *m = start(s, tpl, tag);
  const char *db = jm_mirror_db_path(m);
  for (int c = 0; c < N_CONV; c++) { /* the copy starts where it should */
    char *now = conv_dump(db, c);
    ASSERT_STR_EQ(now, st->before[c]);
    free(now);
  }
  jm_error err;
  jm_error_clear(&err);
  arm(op, code, k, sticky);
  int rc = s->act(m, &err);
  long fired = F.fired;
  disarm();
  ASSERT(fired > 0);
  integrity_ok(db);
  check_states(db, st, tag);
  t->points++;
  if (rc != 0) {
    t->failed++;
    check_message(&err, code, db);
  } else {
    t->survived++;
    check_after(db, st, tag); /* it said it worked: all of it is there */
  }
  /* The fault is gone: the same handle retries (as jmirrord does). */
  jm_error_clear(&err);
  rc = s->act(m, &err);
  if (rc != 0)
    test_fail(__FILE__, __LINE__, "%s: the retry failed: %s", tag, err.msg);
  check_after(db, st, tag);
  mt_verify_ok(m);
  jm_mirror_close(m);
  /* A fresh connection (the WAL recovered or not) sees the same. */
  m = mt_open(mt_root(tag), NULL, 0);
  check_after(jm_mirror_db_path(m), st, tag);
  integrity_ok(jm_mirror_db_path(m));
  jm_mirror_close(m);
  test_rmtree(mt_root(tag));
}

/* Sweep the fault over the calls of `op` the scenario makes: all of them,
 * or `max_points` spread evenly. */
static void sweep(const scenario *s, int op, int code, int sticky,
                  long max_points) {
  vfs_install();
  /* mt_root() answers from a ring of 16 buffers: keep a copy. */
  char *tpl = strdup(make_template(s->first));
  states st = {{0}, {0}};
  long n = clean_run(s, tpl, op, &st, "clean");
  test_rmtree(mt_root("clean"));
  tally t = {0, 0, 0};
  long step = n > max_points ? (n + max_points - 1) / max_points : 1;
  for (long k = 0; k < n; k += step)
    one_point(s, tpl, &st, op, code, sticky, k, &t);
  if (n > 0 && (n - 1) % step != 0)
    one_point(s, tpl, &st, op, code, sticky, n - 1, &t);
  printf("# %s: %ld %s calls in a clean run; %ld fault points: %ld failed "
         "cleanly, %ld absorbed after commit\n", s->name,
         n, op == OP_WRITE ? "xWrite" : "xSync", t.points, t.failed,
         t.survived);
  fflush(stdout);
  ASSERT(n > 0);         /* the scenario reached the calls it is about */
  ASSERT(t.failed > 0);  /* and some faults did make it fail */
  for (int c = 0; c < N_CONV; c++) {
    free(st.before[c]);
    free(st.after[c]);
  }
  free(tpl);
}

static const scenario s_ingest = {"ingest", 40, 60, 0, 1, 0, act_ingest};
static const scenario s_ingest_ckpt = {"ingest-ckpt", 40, 60, 1, 1, 0,
                                       act_ingest};
static const scenario s_ingest_spill = {"ingest-spill", 40, 200, 0, 1, 1,
                                        act_ingest};
static const scenario s_replay = {"replay", 60, 30, 0, 2, 0, act_replay};
static const scenario s_replay_spill = {"replay-spill", 200, 30, 0, 2, 1,
                                        act_replay};
static const scenario s_catch_up = {"catch-up", 30, 50, 0, -1, 0,
                                    act_catch_up};
static const scenario s_catch_up_ckpt = {"catch-up-ckpt", 30, 50, 1, -1, 0,
                                         act_catch_up};
static const scenario s_rebuild = {"rebuild", 50, 20, 0, -1, 0, act_rebuild};

/* ------------------------------------------------------------------ */
/* Cases.                                                               */

static void test_ingest_write_ioerr(void) {
  sweep(&s_ingest, OP_WRITE, SQLITE_IOERR_WRITE, 0, 200);
}

static void test_ingest_disk_full(void) {
  sweep(&s_ingest, OP_WRITE, SQLITE_FULL, 1, 200);
}

/* With a checkpoint in the commit, writes and syncs of the database file
 * happen after the transaction is durable in the WAL. */
static void test_ingest_checkpoint_write_ioerr(void) {
  sweep(&s_ingest_ckpt, OP_WRITE, SQLITE_IOERR_WRITE, 0, 200);
}

static void test_ingest_checkpoint_sync_ioerr(void) {
  sweep(&s_ingest_ckpt, OP_SYNC, SQLITE_IOERR_FSYNC, 0, 200);
}

static void test_ingest_checkpoint_disk_full(void) {
  sweep(&s_ingest_ckpt, OP_WRITE, SQLITE_FULL, 1, 200);
}

/* Statements that fail mid-transaction (a page spilled to the WAL before
 * COMMIT): the rest of the transaction must not be committed. */
static void test_ingest_spill_write_ioerr(void) {
  sweep(&s_ingest_spill, OP_WRITE, SQLITE_IOERR_WRITE, 0, 60);
}

static void test_ingest_spill_disk_full(void) {
  sweep(&s_ingest_spill, OP_WRITE, SQLITE_FULL, 1, 60);
}

static void test_replay_spill_write_ioerr(void) {
  sweep(&s_replay_spill, OP_WRITE, SQLITE_IOERR_WRITE, 0, 60);
}

static void test_replay_write_ioerr(void) {
  sweep(&s_replay, OP_WRITE, SQLITE_IOERR_WRITE, 0, 200);
}

static void test_replay_disk_full(void) {
  sweep(&s_replay, OP_WRITE, SQLITE_FULL, 1, 200);
}

/* Several conversations, one transaction each: a fault stops the run with
 * some committed and the rest as they were. */
static void test_catch_up_write_ioerr(void) {
  sweep(&s_catch_up, OP_WRITE, SQLITE_IOERR_WRITE, 0, 90);
}

static void test_catch_up_disk_full(void) {
  sweep(&s_catch_up, OP_WRITE, SQLITE_FULL, 1, 90);
}

static void test_catch_up_checkpoint_sync_ioerr(void) {
  sweep(&s_catch_up_ckpt, OP_SYNC, SQLITE_IOERR_FSYNC, 0, 200);
}

/* replay --all: the scratch database and the copy into the live mirror. */
static void test_rebuild_write_ioerr(void) {
  sweep(&s_rebuild, OP_WRITE, SQLITE_IOERR_WRITE, 0, 60);
}

static void test_rebuild_disk_full(void) {
  sweep(&s_rebuild, OP_WRITE, SQLITE_FULL, 1, 60);
}

static void test_rebuild_sync_ioerr(void) {
  sweep(&s_rebuild, OP_SYNC, SQLITE_IOERR_FSYNC, 0, 150);
}

static const test_case cases[] = {
  TEST_CASE_T(test_ingest_write_ioerr, 300),
  TEST_CASE_T(test_ingest_disk_full, 300),
  TEST_CASE_T(test_ingest_checkpoint_write_ioerr, 300),
  TEST_CASE_T(test_ingest_checkpoint_sync_ioerr, 300),
  TEST_CASE_T(test_ingest_checkpoint_disk_full, 300),
  TEST_CASE_T(test_ingest_spill_write_ioerr, 300),
  TEST_CASE_T(test_ingest_spill_disk_full, 300),
  TEST_CASE_T(test_replay_spill_write_ioerr, 300),
  TEST_CASE_T(test_replay_write_ioerr, 300),
  TEST_CASE_T(test_replay_disk_full, 300),
  TEST_CASE_T(test_catch_up_write_ioerr, 300),
  TEST_CASE_T(test_catch_up_disk_full, 300),
  TEST_CASE_T(test_catch_up_checkpoint_sync_ioerr, 300),
  TEST_CASE_T(test_rebuild_write_ioerr, 300),
  TEST_CASE_T(test_rebuild_disk_full, 300),
  TEST_CASE_T(test_rebuild_sync_ioerr, 300),
  {0},
};

int main(int argc, char **argv) { return test_main(argc, argv, cases); }
