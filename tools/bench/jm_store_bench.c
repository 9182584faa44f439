/*
 * jm_store_bench.c - latency of the store's reads (benchmarks).
 *
 *   jm_store_bench ROOT [--db DB] [--conversation ID] [--reps N]
 *                  [--budget SECONDS] [--query Q]...
 *   jm_store_bench ROOT [--db DB] --replay ID [--reps N] [--budget SECONDS]
 *   jm_store_bench --versions
 *
 * Times what an application calls through include/jmirror/store.h, each
 * operation once untimed (warm-up), then up to N times (default 200), but
 * no more once BUDGET seconds (default 20) are spent on it (at least once):
 *
 *   ls      jm_store_list, the first page of 50;
 *   show    jm_store_messages of conversation ID, paging through all of it
 *           500 at a time (what `jmirror show` does);
 *   search  jm_store_search for each --query (default limit 20).
 *
 * Reads heal first: with jmirrord running, a read asks it to bring the
 * conversation up to date; without, the store compares the file with the
 * mirror itself.  Prints one JSON object: {"daemon": bool, "ops": [{name,
 * query?, results, reps, median_ms, p99_ms, min_ms, max_ms}...]}.
 *
 * --replay ID times jm_mirror_replay() of one conversation in this process
 * (the writer lock taken once, outside the timing; no daemon may run): the
 * library call without the start of a `jmirror` process.  "results" is the
 * number of events replayed.
 * --versions prints the versions of the libraries linked in.
 */
#include <jansson.h>
#include <jmirror/jmirror.h>
#include <sqlite3.h>
#include <uv.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(const double *sorted, size_t n, double p) {
  if (n == 0)
    return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return sorted[i < n ? i : n - 1];
}

typedef struct op {
  const char *name, *query;
  int (*run)(jm_store *s, const struct op *o, size_t *results, jm_error *err);
  const char *conv;
} op;

static int run_ls(jm_store *s, const op *o, size_t *results, jm_error *err) {
  (void)o;
  jm_list_options lo = {0};
  lo.limit = 50;
  jm_conversation_list l;
  int rc = jm_store_list(s, &lo, &l, err);
  if (rc == 0) {
    *results = l.n;
    jm_conversation_list_free(&l);
  }
  return rc;
}

static int run_show(jm_store *s, const op *o, size_t *results, jm_error *err) {
  int64_t next = 0;
  size_t n = 0;
  while (next >= 0) {
    jm_message_list l;
    int rc = jm_store_messages(s, o->conv, next, 500, &l, err);
    if (rc != 0)
      return rc;
    n += l.n;
    next = l.next_after;
    jm_message_list_free(&l);
  }
  *results = n;
  return 0;
}

static jm_mirror *replay_mirror;

static int run_replay(jm_store *s, const op *o, size_t *results,
                      jm_error *err) {
  (void)s;
  jm_ingest_result r;
  int rc = jm_mirror_replay(replay_mirror, o->conv, 0, &r, err);
  if (rc == 0)
    *results = (size_t)r.events;
  return rc;
}

static int run_search(jm_store *s, const op *o, size_t *results,
                      jm_error *err) {
  jm_search_options so = {0};
  jm_search_results r;
  int rc = jm_store_search(s, o->query, &so, &r, err);
  if (rc == 0) {
    *results = r.n;
    jm_search_results_free(&r);
  }
  return rc;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "--versions") == 0) {
    printf("{\"jmirror\":\"%s\",\"sqlite\":\"%s\",\"libuv\":\"%s\","
           "\"jansson\":\"%s\"}\n",
           JM_VERSION_STRING, sqlite3_libversion(), uv_version_string(),
           jansson_version_str());
    return 0;
  }
  const char *root = NULL, *conv = NULL, *replay = NULL;
  jm_store_options so;
  jm_store_options_init(&so);
  long reps = 200;
  double budget = 20;
  op ops[64];
  size_t nops = 0;
  ops[nops++] = (op){"ls", NULL, run_ls, NULL};
  size_t nq = 0;
  const char *queries[48];
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int has = i + 1 < argc;
    if (strcmp(a, "--db") == 0 && has)
      so.db_path = argv[++i];
    else if (strcmp(a, "--conversation") == 0 && has)
      conv = argv[++i];
    else if (strcmp(a, "--reps") == 0 && has)
      reps = strtol(argv[++i], NULL, 10);
    else if (strcmp(a, "--budget") == 0 && has)
      budget = atof(argv[++i]);
    else if (strcmp(a, "--replay") == 0 && has)
      replay = argv[++i];
    else if (strcmp(a, "--query") == 0 && has && nq < 48)
      queries[nq++] = argv[++i];
    else if (a[0] != '-' && root == NULL)
      root = a;
    else {
      fprintf(stderr,
              "usage: jm_store_bench ROOT [--db DB] [--conversation ID]"
              " [--reps N] [--budget SECONDS] [--query Q]...\n"
              "       jm_store_bench ROOT [--db DB] --replay ID [--reps N]"
              " [--budget SECONDS]\n"
              "       jm_store_bench --versions\n");
      return 2;
    }
  }
  if (root == NULL || reps < 1) {
    fprintf(stderr, "jm_store_bench: give ROOT (and --reps >= 1)\n");
    return 2;
  }
  if (replay)
    nops = 0;
  if (replay)
    ops[nops++] = (op){"replay", NULL, run_replay, replay};
  else if (conv)
    ops[nops++] = (op){"show", NULL, run_show, conv};
  for (size_t q = 0; q < nq && !replay; q++)
    ops[nops++] = (op){"search", queries[q], run_search, NULL};

  jm_error err;
  jm_error_clear(&err);
  char *db =
      jm_mirror_resolve_path(root, &(jm_mirror_options){.db_path = so.db_path});
  jm_client *cl;
  int daemon = jm_client_connect(db, 1000, &cl, NULL) == 0;
  if (daemon)
    jm_client_close(cl);
  free(db);

  jm_store *s = NULL;
  if (replay) {
    jm_mirror_options mo = {.db_path = so.db_path};
    if (jm_mirror_open(&replay_mirror, root, &mo, &err) != 0 ||
        jm_mirror_lock(replay_mirror, 2000, "jm_store_bench", &err) != 0) {
      fprintf(stderr, "jm_store_bench: %s\n", err.msg);
      jm_mirror_close(replay_mirror);
      return 1;
    }
  } else if (jm_store_open(&s, root, &so, &err) != 0) {
    fprintf(stderr, "jm_store_bench: %s\n", err.msg);
    return 1;
  }
  json_t *out = json_object(), *arr = json_array();
  json_object_set_new(out, "daemon", json_boolean(daemon));
  double *t = malloc((size_t)reps * sizeof *t);
  int rc = 0;
  for (size_t i = 0; i < nops && rc == 0; i++) {
    size_t results = 0;
    if ((rc = ops[i].run(s, &ops[i], &results, &err)) != 0)
      break;
    long n = 0;
    double t_start = now_s();
    while (n < reps && (n < 1 || now_s() - t_start < budget)) {
      double a = now_s();
      if ((rc = ops[i].run(s, &ops[i], &results, &err)) != 0)
        break;
      t[n++] = (now_s() - a) * 1000;
    }
    if (rc != 0)
      break;
    qsort(t, (size_t)n, sizeof *t, cmp_double);
    json_t *o =
        json_pack("{s:s,s:I,s:I,s:f,s:f,s:f,s:f}", "name", ops[i].name,
                  "results", (json_int_t)results, "reps", (json_int_t)n,
                  "median_ms", pct(t, (size_t)n, 0.5), "p99_ms",
                  pct(t, (size_t)n, 0.99), "min_ms", t[0], "max_ms", t[n - 1]);
    if (ops[i].query)
      json_object_set_new(o, "query", json_string(ops[i].query));
    if (ops[i].conv)
      json_object_set_new(o, "conversation", json_string(ops[i].conv));
    json_array_append_new(arr, o);
  }
  free(t);
  if (rc != 0)
    fprintf(stderr, "jm_store_bench: %s\n", err.msg);
  if (s)
    jm_store_close(s, NULL);
  if (replay_mirror) {
    jm_mirror_unlock(replay_mirror);
    jm_mirror_close(replay_mirror);
  }
  json_object_set_new(out, "ops", arr);
  if (rc == 0) {
    char *txt = json_dumps(out, JSON_COMPACT);
    puts(txt);
    free(txt);
  }
  json_decref(out);
  return rc ? 1 : 0;
}
