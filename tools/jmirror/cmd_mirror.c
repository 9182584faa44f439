/*
 * cmd_mirror.c - the mirror's commands: replay, verify, errors.
 *
 *   jmirror replay <id>... | --all [--threads N] [--json]
 *   jmirror verify [<id>...] [--repair] [--json] [--threads N]
 *   jmirror errors [<id>] [--json]
 *
 * Writes to the mirror need its writer lock.  When jmirrord holds it, the
 * work is handed to the daemon over its control socket (cli_delegate);
 * otherwise these commands take the lock themselves.
 */
#include "cli.h"

#include <jansson.h>
#include <sqlite3.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

int cli_open_mirror(cli *c, int read_only, jm_mirror **out) {
  jm_mirror_options opt = {.db_path = c->mirror_flag, .read_only = read_only, .max_line = 0};
  jm_error err;
  jm_error_clear(&err);
  if (jm_mirror_open(out, c->root, &opt, &err) != 0)
    return cli_fail(&err);
  return 0;
}

void cli_print_json(json_t *j) {
  json_dumpf(j, stdout, JSON_COMPACT);
  fputc('\n', stdout);
  json_decref(j);
}

#define print_json cli_print_json

static int lock_or_fail(jm_mirror *m, const char *who) {
  jm_error err;
  jm_error_clear(&err);
  if (jm_mirror_lock(m, 2000, who, &err) != 0)
    return cli_fail(&err);
  return 0;
}

/* Build the full-text index to the end (progress on a TTY). */
static int finish_index(jm_mirror *m, double *seconds) {
  jm_error err;
  jm_error_clear(&err);
  progress p;
  progress_init(&p, "search index");
  jm_search_progress sp;
  int64_t start = -1;
  do {
    if (jm_mirror_index_step(m, 20000, &sp, &err) != 0) {
      progress_done(&p);
      return cli_fail(&err);
    }
    if (start < 0)
      start = sp.upto;
    if (!sp.done)
      progress_cb(&p, (uint64_t)(sp.upto - start),
                  (uint64_t)(sp.max_rowid > start ? sp.max_rowid - start : 1));
  } while (!sp.done);
  progress_done(&p);
  if (seconds) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    *seconds = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 - p.t0;
  }
  return 0;
}

/* One line on stderr when the mirror was found damaged and made anew. */
static void say_recreated(jm_mirror *m) {
  if (jm_mirror_recreated(m))
    fprintf(stderr,
            "jmirror: mirror '%s' was damaged (not a readable database): "
            "set aside as '%s.damaged', rebuilding it from the journal\n",
            jm_mirror_db_path(m), jm_mirror_db_path(m));
}

/* replay ----------------------------------------------------------------------- */

static int replay_all(jm_mirror *m, int threads, int json) {
  jm_error err;
  jm_error_clear(&err);
  jm_rebuild_stats st;
  progress p;
  progress_init(&p, "replay");
  int rc = jm_mirror_rebuild(m, threads, progress_cb, &p, &st, &err);
  progress_done(&p);
  if (rc != 0)
    return cli_fail(&err);
  double index_s = 0;
  if ((rc = finish_index(m, &index_s)) != 0)
    return rc;
  double eps = st.seconds > 0 ? (double)st.events / st.seconds : 0;
  if (json)
    print_json(json_pack("{s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f,s:f,s:f,s:f}",
                         "conversations",
                         (json_int_t)st.conversations, "events",
                         (json_int_t)st.events, "bad_lines",
                         (json_int_t)st.bad_lines, "bytes",
                         (json_int_t)st.bytes, "ignored_files",
                         (json_int_t)st.ignored_files, "seconds", st.seconds,
                         "events_per_second", eps, "rows_seconds",
                         st.rows_seconds, "rows_cpu_seconds",
                         st.rows_cpu_seconds, "swap_seconds",
                         st.swap_seconds, "search_index_seconds", index_s));
  else
    printf("replayed %llu conversations: %llu events, %llu bad lines, "
           "%.1f MB in %.2f s (%.0f events/s)%s; search index built in "
           "%.2f s\n",
           (unsigned long long)st.conversations,
           (unsigned long long)st.events, (unsigned long long)st.bad_lines,
           (double)st.bytes / 1e6, st.seconds, eps,
           st.ignored_files ? " (some files in journal/ ignored)" : "",
           index_s);
  return EXIT_OK;
}

static void say_no_journal_file(const char *root, const char *id) {
  char *path = jm_journal_path(root, id);
  fprintf(stderr,
          "jmirror: no journal file '%s': nothing to replay for '%s' (it is "
          "not in the mirror)\n",
          path ? path : id, id);
  free(path);
}

/* Nothing to replay: the id has no journal file (a typo, or a file gone).
 * The mirror follows journal/, so the library removed any rows it had;
 * still an error for whoever asked for this one.  1: said so. */
static int no_journal_file(jm_mirror *m, const char *id,
                           const jm_ingest_result *r) {
  if (r->removed)
    say_no_journal_file(jm_mirror_root(m), id);
  return r->removed;
}

/* The same, after jmirrord replayed `id` (it answers only with totals):
 * 1 if the id has no regular journal file. */
static int no_journal_file_at(const char *root, const char *id) {
  char *path = jm_journal_path(root, id);
  struct stat st;
  int gone = path && (lstat(path, &st) != 0 || !S_ISREG(st.st_mode));
  free(path);
  if (gone)
    say_no_journal_file(root, id);
  return gone;
}

static int replay_some(jm_mirror *m, char **ids, int n, int threads,
                       int json) {
  jm_error err;
  unsigned long long events = 0, bad = 0;
  json_t *arr = json ? json_array() : NULL;
  int status = EXIT_OK, done = 0;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < n; i++) {
    jm_error_clear(&err);
    jm_ingest_result r;
    if (jm_mirror_replay(m, ids[i], threads, &r, &err) != 0) {
      cli_fail(&err);
      status = EXIT_FAIL;
      continue;
    }
    if (no_journal_file(m, ids[i], &r)) {
      status = EXIT_FAIL;
      continue;
    }
    done++;
    events += r.events;
    bad += r.bad_lines;
    if (json)
      json_array_append_new(
          arr, json_pack("{s:s,s:I,s:I,s:I,s:b}", "conversation", ids[i],
                         "events", (json_int_t)r.events, "bad_lines",
                         (json_int_t)r.bad_lines, "bytes",
                         (json_int_t)r.offset, "removed", r.removed));
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) +
                (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
  if (json)
    print_json(arr);
  else if (done > 0) /* failures said so already, one line each */
    printf("replayed %d conversation%s%s: %llu events, %llu bad lines in "
           "%.2f s (%.0f events/s)\n",
           done, done == 1 ? "" : "s", done < n ? " (the others failed)" : "",
           events, bad, secs, secs > 0 ? (double)events / secs : 0.0);
  return status;
}

static json_t *ids_array(char **ids, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++)
    json_array_append_new(a, json_string(ids[i]));
  return a;
}

/* The daemon owns the mirror: let it replay.  An exit code, or -1 when no
 * daemon runs (do it here). */
static int replay_via_daemon(cli *c, int all, char **ids, int n, int json) {
  json_t *req = all ? json_pack("{s:s,s:b}", "cmd", "replay", "all", 1)
                    : json_pack("{s:s,s:o}", "cmd", "replay", "ids",
                                ids_array(ids, n));
  json_t *resp;
  int rc = cli_delegate(c, req, &resp);
  json_decref(req);
  if (rc == 0)
    return -1;
  if (rc < 0)
    return -rc;
  json_object_del(resp, "ok");
  json_object_set_new(resp, "by_daemon", json_true());
  int missing = 0;
  for (int i = 0; !all && i < n; i++)
    missing += no_journal_file_at(c->root, ids[i]);
  long long convs =
      json_integer_value(json_object_get(resp, "conversations")) - missing;
  json_object_set_new(resp, "conversations", json_integer(convs));
  if (json)
    print_json(json_incref(resp));
  else if (convs > 0 || all) /* failures said so already, one line each */
    printf("replayed by jmirrord: %lld conversations, %lld events, %lld bad "
           "lines\n",
           convs,
           (long long)json_integer_value(json_object_get(resp, "events")),
           (long long)json_integer_value(json_object_get(resp, "bad_lines")));
  json_decref(resp);
  return missing ? EXIT_FAIL : EXIT_OK;
}

int cmd_replay(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {
      {"all", 0}, {"threads", 1}, {"json", 0}, {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  unsigned long long threads = 0;
  if (o.values[1] && (rc = cli_parse_uint(c, "threads", o.values[1],
                                          &threads)) != 0)
    return rc;
  int all = o.values[0] != NULL, json = o.values[2] != NULL;
  if (all == (o.n_operands > 0))
    return cli_usage(c, "give conversation ids or --all (not both)");
  for (int i = 0; i < o.n_operands; i++) {
    jm_error err;
    if (jm_id_check(o.operands[i], strlen(o.operands[i]), &err) != 0)
      return cli_fail(&err);
  }
  if ((rc = replay_via_daemon(c, all, o.operands, o.n_operands, json)) >= 0)
    return rc;
  jm_mirror *m;
  jm_mirror_options mo = {.db_path = c->mirror_flag, .read_only = 0,
                          .max_line = 0, .allow_newer = all,
                          .recreate_damaged = all};
  jm_error oerr;
  jm_error_clear(&oerr);
  if (jm_mirror_open(&m, c->root, &mo, &oerr) != 0)
    return cli_fail(&oerr); /* --all rebuilds even a newer mirror */
  say_recreated(m);
  if ((rc = lock_or_fail(m, "jmirror replay")) == 0)
    rc = all ? replay_all(m, (int)threads, json)
             : replay_some(m, o.operands, o.n_operands, (int)threads, json);
  jm_mirror_close(m);
  return rc;
}

/* verify ----------------------------------------------------------------------- */

static const char *state_name(jm_verify_state s) {
  return s == JM_VERIFY_OK ? "ok" : s == JM_VERIFY_BEHIND ? "behind" : "drift";
}

typedef struct vout {
  int json, verbose;
  json_t *items;
  /* what --repair must do */
  char **drift, **behind;
  size_t ndrift, nbehind, cap_d, cap_b;
} vout;

static int push(char ***v, size_t *n, size_t *cap, const char *id) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 16;
    char **p = realloc(*v, *cap * sizeof *p);
    if (p == NULL)
      return -1;
    *v = p;
  }
  (*v)[(*n)++] = strdup(id);
  return 0;
}

static int on_item(void *ctx, const jm_verify_item *it) {
  vout *o = ctx;
  if (it->state == JM_VERIFY_DRIFT)
    push(&o->drift, &o->ndrift, &o->cap_d, it->id);
  else if (it->state == JM_VERIFY_BEHIND)
    push(&o->behind, &o->nbehind, &o->cap_b, it->id);
  if (o->json) {
    json_array_append_new(
        o->items,
        json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:I,s:s}", "conversation", it->id,
                  "state", state_name(it->state), "missing",
                  (json_int_t)it->missing, "extra", (json_int_t)it->extra,
                  "changed", (json_int_t)it->changed, "mirror_offset",
                  (json_int_t)it->mirror_offset, "file_offset",
                  (json_int_t)it->file_offset, "detail", it->detail));
    return 0;
  }
  if (it->state != JM_VERIFY_OK || o->verbose)
    printf("%-6s %s%s%s\n", state_name(it->state), it->id,
           it->detail[0] ? ": " : "", it->detail);
  return 0;
}

static void free_list(char **v, size_t n) {
  for (size_t i = 0; i < n; i++)
    free(v[i]);
  free(v);
}

static int run_verify(jm_mirror *m, char **ids, int n, int threads, vout *o,
                      jm_verify_summary *sum) {
  jm_error err;
  jm_error_clear(&err);
  progress p;
  progress_init(&p, "verify");
  int rc = jm_mirror_verify(m, (const char *const *)ids, (size_t)n, threads,
                            on_item, o, progress_cb, &p, sum, &err);
  progress_done(&p);
  return rc ? cli_fail(&err) : 0;
}

/* Replay what drifted, ingest what is behind. */
static int repair(jm_mirror *m, vout *o, int threads) {
  jm_error err;
  int status = 0;
  for (size_t i = 0; i < o->ndrift; i++) {
    jm_error_clear(&err);
    if (jm_mirror_replay(m, o->drift[i], threads, NULL, &err) != 0)
      status = cli_fail(&err);
    else if (!o->json)
      printf("repaired %s (replayed)\n", o->drift[i]);
  }
  for (size_t i = 0; i < o->nbehind; i++) {
    jm_error_clear(&err);
    jm_ingest_result r;
    do {
      if (jm_mirror_ingest(m, o->behind[i], NULL, &r, &err) != 0) {
        status = cli_fail(&err);
        break;
      }
    } while (r.more);
    if (!o->json)
      printf("caught up %s\n", o->behind[i]);
  }
  return status;
}

static void print_summary(const jm_verify_summary *s, const char *what) {
  printf("%s %llu conversation%s: %llu ok, %llu behind, %llu drift\n", what,
         (unsigned long long)s->checked, s->checked == 1 ? "" : "s",
         (unsigned long long)s->ok, (unsigned long long)s->behind,
         (unsigned long long)s->drift);
}

/* Read-only, unless there is no mirror at all: then an empty one (derived
 * data; creating it changes nothing the journal says). */
static int open_for_verify(cli *c, int repair, jm_mirror **m) {
  jm_mirror_options opt = {.db_path = c->mirror_flag, .read_only = !repair,
                           .max_line = 0, .recreate_damaged = repair};
  jm_error err;
  jm_error_clear(&err);
  int rc = jm_mirror_open(m, c->root, &opt, &err);
  if (rc == -ENOENT && !repair) {
    opt.read_only = 0;
    jm_error_clear(&err);
    rc = jm_mirror_open(m, c->root, &opt, &err);
  }
  if (rc == 0)
    say_recreated(*m);
  return rc ? cli_fail(&err) : 0;
}

/* A corrupt database cannot be compared row by row: rebuild or refuse. */
static int check_integrity(jm_mirror *m, int repair, int threads) {
  char why[256];
  int ok = jm_mirror_check_integrity(m, why, sizeof why);
  if (ok > 0)
    return 0;
  if (ok < 0) {
    cli_err("cannot read mirror '%s': %s", jm_mirror_db_path(m), why);
    return EXIT_FAIL;
  }
  if (!repair) {
    cli_err("mirror '%s' is corrupt (%s): repair it with 'jmirror verify "
            "--repair' or 'jmirror replay --all'",
            jm_mirror_db_path(m), why);
    return EXIT_FAIL;
  }
  int rc = lock_or_fail(m, "jmirror verify --repair");
  if (rc == 0) {
    fprintf(stderr, "jmirror: mirror is corrupt (%s); rebuilding it\n", why);
    rc = replay_all(m, threads, 0);
  }
  return rc;
}

/* verify --repair while jmirrord owns the mirror: it verifies, repairs and
 * verifies again.  An exit code, or -1 when no daemon runs. */
static int verify_via_daemon(cli *c, char **ids, int n, int json) {
  json_t *req = json_pack("{s:s,s:o,s:b}", "cmd", "verify", "ids",
                          ids_array(ids, n), "repair", 1);
  json_t *resp;
  int rc = cli_delegate(c, req, &resp);
  json_decref(req);
  if (rc == 0)
    return -1;
  if (rc < 0)
    return -rc;
  json_int_t drift = json_integer_value(json_object_get(resp, "drift"));
  if (json) {
    json_object_del(resp, "ok");
    json_object_set_new(resp, "by_daemon", json_true());
    print_json(json_incref(resp));
  } else {
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(resp, "conversations"), i, it) {
      const char *d = json_string_value(json_object_get(it, "detail"));
      printf("%-6s %s%s%s\n",
             json_string_value(json_object_get(it, "state")),
             json_string_value(json_object_get(it, "conversation")),
             d && d[0] ? ": " : "", d ? d : "");
    }
    printf("verified by jmirrord (%lld repaired): %lld conversations: %lld ok, "
           "%lld behind, %lld drift\n",
           (long long)json_integer_value(json_object_get(resp, "repaired")),
           (long long)json_integer_value(json_object_get(resp, "checked")),
           (long long)json_integer_value(json_object_get(resp, "ok_count")),
           (long long)json_integer_value(json_object_get(resp, "behind")),
           (long long)drift);
  }
  json_decref(resp);
  return drift ? EXIT_FAIL : EXIT_OK;
}

/* Plain verify reads the mirror itself; a running jmirrord first makes
 * sure that the file at the path is the one it keeps (it reopens and
 * rebuilds a mirror deleted or replaced under it).  0, or an exit code. */
static int daemon_check_mirror(cli *c) {
  json_t *req = json_pack("{s:s}", "cmd", "check_mirror"), *resp;
  int rc = cli_delegate(c, req, &resp);
  json_decref(req);
  if (rc < 0)
    return -rc;
  if (rc > 0 && json_is_true(json_object_get(resp, "reopened")))
    fprintf(stderr, "jmirror: the mirror had been deleted or replaced under "
                    "jmirrord; it reopened and rebuilt it first\n");
  json_decref(resp);
  return 0;
}

int cmd_verify(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {{"repair", 0}, {"json", 0},
                                   {"threads", 1}, {"verbose", 0}, {NULL, 0}};
  opt_result op;
  int rc = cli_parse(c, argc, argv, specs, &op);
  if (rc)
    return rc;
  unsigned long long threads = 0;
  if (op.values[2] &&
      (rc = cli_parse_uint(c, "threads", op.values[2], &threads)) != 0)
    return rc;
  for (int i = 0; i < op.n_operands; i++) {
    jm_error err;
    if (jm_id_check(op.operands[i], strlen(op.operands[i]), &err) != 0)
      return cli_fail(&err);
  }
  int do_repair = op.values[0] != NULL;
  if (do_repair && (rc = verify_via_daemon(c, op.operands, op.n_operands,
                                           op.values[1] != NULL)) >= 0)
    return rc;
  if (!do_repair && (rc = daemon_check_mirror(c)) != 0)
    return rc;
  vout o = {0};
  o.json = op.values[1] != NULL;
  o.verbose = op.values[3] != NULL || op.n_operands > 0;
  o.items = o.json ? json_array() : NULL;
  jm_mirror *m;
  if ((rc = open_for_verify(c, do_repair, &m)) != 0) {
    json_decref(o.items);
    return rc;
  }
  jm_verify_summary sum;
  if ((rc = check_integrity(m, do_repair, (int)threads)) != 0) {
    jm_mirror_close(m);
    json_decref(o.items);
    return rc;
  }
  rc = run_verify(m, op.operands, op.n_operands, (int)threads, &o, &sum);
  if (rc == 0 && do_repair && (o.ndrift || o.nbehind)) {
    if ((rc = lock_or_fail(m, "jmirror verify --repair")) == 0)
      rc = repair(m, &o, (int)threads);
    if (rc == 0) { /* and check again */
      if (!o.json)
        print_summary(&sum, "before repair:");
      free_list(o.drift, o.ndrift);
      free_list(o.behind, o.nbehind);
      o.drift = o.behind = NULL;
      o.ndrift = o.nbehind = o.cap_d = o.cap_b = 0;
      json_decref(o.items);
      o.items = o.json ? json_array() : NULL;
      rc = run_verify(m, op.operands, op.n_operands, (int)threads, &o, &sum);
    }
  }
  jm_mirror_close(m);
  if (rc == 0) {
    if (o.json)
      print_json(json_pack("{s:o,s:I,s:I,s:I,s:I}", "conversations", o.items,
                           "checked", (json_int_t)sum.checked, "ok",
                           (json_int_t)sum.ok, "behind",
                           (json_int_t)sum.behind, "drift",
                           (json_int_t)sum.drift));
    else
      print_summary(&sum, "verified");
    o.items = NULL;
    rc = sum.drift ? EXIT_FAIL : EXIT_OK;
  }
  json_decref(o.items);
  free_list(o.drift, o.ndrift);
  free_list(o.behind, o.nbehind);
  return rc;
}

/* ingest ----------------------------------------------------------------------- */

int cmd_ingest(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {{"json", 0}, {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  jm_error err;
  for (int i = 0; i < o.n_operands; i++)
    if (jm_id_check(o.operands[i], strlen(o.operands[i]), &err) != 0)
      return cli_fail(&err);
  json_t *req = json_pack("{s:s,s:o}", "cmd", "ingest", "ids",
                          ids_array(o.operands, o.n_operands));
  json_t *resp;
  rc = cli_delegate(c, req, &resp);
  json_decref(req);
  if (rc < 0)
    return -rc;
  if (rc == 1) {
    if (o.values[0]) {
      json_object_del(resp, "ok");
      json_object_set_new(resp, "by_daemon", json_true());
      print_json(json_incref(resp));
    } else
      printf("ingested by jmirrord: %lld of %lld files (%lld unchanged), "
             "%lld events; %lld replayed, %lld removed\n",
             (long long)json_integer_value(json_object_get(resp, "ingested")),
             (long long)json_integer_value(json_object_get(resp, "files")),
             (long long)json_integer_value(json_object_get(resp, "unchanged")),
             (long long)json_integer_value(json_object_get(resp, "events")),
             (long long)json_integer_value(json_object_get(resp, "replayed")),
             (long long)json_integer_value(json_object_get(resp, "removed")));
    json_decref(resp);
    return EXIT_OK;
  }
  jm_mirror *m;
  if ((rc = cli_open_mirror(c, 0, &m)) != 0)
    return rc;
  if ((rc = lock_or_fail(m, "jmirror ingest")) != 0) {
    jm_mirror_close(m);
    return rc;
  }
  jm_catchup_stats st;
  memset(&st, 0, sizeof st);
  jm_error_clear(&err);
  progress p;
  progress_init(&p, "ingest");
  rc = jm_mirror_catch_up(m, (const char *const *)o.operands,
                          (size_t)o.n_operands, NULL, progress_cb, &p, &st,
                          &err);
  progress_done(&p);
  if (rc == 0 && (rc = finish_index(m, NULL)) != 0) {
    jm_mirror_close(m);
    return rc;
  }
  jm_mirror_close(m);
  if (rc)
    return cli_fail(&err);
  if (o.values[0])
    print_json(json_pack("{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f}", "files",
                         (json_int_t)st.files, "unchanged",
                         (json_int_t)st.unchanged, "ingested",
                         (json_int_t)st.ingested, "replayed",
                         (json_int_t)st.replayed, "removed",
                         (json_int_t)st.removed, "events",
                         (json_int_t)st.events, "bad_lines",
                         (json_int_t)st.bad_lines, "ignored_files",
                         (json_int_t)st.ignored_files, "seconds", st.seconds));
  else
    printf("ingested %llu of %llu files (%llu unchanged): %llu events, %llu "
           "bad lines; %llu replayed, %llu removed\n",
           (unsigned long long)st.ingested, (unsigned long long)st.files,
           (unsigned long long)st.unchanged, (unsigned long long)st.events,
           (unsigned long long)st.bad_lines, (unsigned long long)st.replayed,
           (unsigned long long)st.removed);
  return EXIT_OK;
}

/* errors ----------------------------------------------------------------------- */

/* errors answers for the journal as it is now, as the reads of the store
 * do: the mirror is brought up to date first (by jmirrord when it runs),
 * so that a bad line appended since the last ingest is listed.  Where it
 * cannot be (a read-only root, another writer busy), what the mirror
 * recorded is listed after a one-line warning saying why. */
static int errors_current(cli *c, char **ids, int n, char *why,
                          size_t whylen) {
  json_t *req = json_pack("{s:s,s:o}", "cmd", "ingest", "ids",
                          ids_array(ids, n));
  json_t *resp;
  int rc = cli_delegate(c, req, &resp);
  json_decref(req);
  if (rc < 0)
    return -rc;
  json_decref(resp);
  if (rc == 1)
    return 0;
  jm_mirror_options opt = {.db_path = c->mirror_flag, .read_only = 0,
                           .max_line = 0};
  jm_error err;
  jm_error_clear(&err);
  jm_mirror *m = NULL;
  jm_catchup_stats st;
  if (jm_mirror_open(&m, c->root, &opt, &err) != 0 ||
      jm_mirror_lock(m, 2000, "jmirror errors", &err) != 0 ||
      jm_mirror_catch_up(m, (const char *const *)ids, (size_t)n, NULL, NULL,
                         NULL, &st, &err) != 0)
    snprintf(why, whylen, "%s", err.msg); /* said if the list can follow */
  if (m)
    jm_mirror_close(m);
  return 0;
}

int cmd_errors(cli *c, int argc, char **argv) {
  static const opt_spec specs[] = {{"json", 0}, {NULL, 0}};
  opt_result o;
  int rc = cli_parse(c, argc, argv, specs, &o);
  if (rc)
    return rc;
  if (o.n_operands > 1)
    return cli_usage(c, "at most one conversation id");
  jm_error err;
  if (o.n_operands == 1 &&
      jm_id_check(o.operands[0], strlen(o.operands[0]), &err) != 0)
    return cli_fail(&err);
  jm_mirror *m; /* read from; open first: no mirror yet is said here */
  if ((rc = cli_open_mirror(c, 1, &m)) != 0)
    return rc;
  if (o.n_operands == 1) { /* a typo must not look like "no bad lines" */
    char *path = jm_journal_path(c->root, o.operands[0]);
    struct stat st;
    int gone = path && lstat(path, &st) != 0 && errno == ENOENT;
    if (gone)
      cli_err("no conversation '%s': no journal file '%s'", o.operands[0],
              path);
    free(path);
    if (gone) {
      jm_mirror_close(m);
      return EXIT_FAIL;
    }
  }
  /* Brought up to date by another connection; the reads below begin
   * after it committed (WAL), so they see it. */
  char why[512] = "";
  if ((rc = errors_current(c, o.operands, o.n_operands, why, sizeof why))) {
    jm_mirror_close(m);
    return rc;
  }
  jm_bad_line_iter *it = NULL;
  jm_error_clear(&err);
  if (jm_mirror_bad_lines(m, o.n_operands ? o.operands[0] : NULL, &it,
                          &err) != 0) {
    jm_mirror_close(m);
    return cli_fail(&err);
  }
  int json = o.values[0] != NULL;
  jm_bad_line bl;
  unsigned long long n = 0;
  while (jm_bad_line_next(it, &bl) == 1) {
    n++;
    if (json)
      print_json(json_pack("{s:s,s:I,s:I,s:s,s:s}", "conversation",
                           bl.conversation_id, "line", (json_int_t)bl.line,
                           "offset", (json_int_t)bl.offset, "reason",
                           bl.reason, "message", bl.message));
    else
      printf("%s:%llu (byte %llu): %s: %s\n", bl.conversation_id,
             (unsigned long long)bl.line, (unsigned long long)bl.offset,
             bl.reason, bl.message);
  }
  jm_bad_line_iter_free(it);
  jm_mirror_close(m);
  /* One line on stderr at most: the verdict, and why it may be behind. */
  if (why[0] && (json || n > 0))
    cli_err("warning: the list may be behind the journal: the mirror could "
            "not be brought up to date (%s)", why);
  else if (why[0])
    fprintf(stderr, "no bad lines recorded (the mirror could not be brought "
            "up to date: %s)\n", why);
  else if (!json && n == 0)
    fprintf(stderr, "no bad lines recorded\n");
  return EXIT_OK;
}
