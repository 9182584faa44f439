/*
 * jm_latency.c - append -> visible latency through a running jmirrord
 * (benchmarks).
 *
 *   jm_latency ROOT [--db DB] [--rate R] [--seconds S] [--conversations K]
 *              [--observe wait|poll]
 *
 * jmirrord must already run on ROOT.  Appends about 300-byte message events
 * with jm_journal_append() (sync none) at a steady R per second (default
 * 1000; an absolute schedule, so a late append does not shift the next)
 * round-robin to K conversations "lat-00".. (default 20) for S seconds
 * (default 10), and measures for each append the time from just before the
 * append call until the daemon has ingested it:
 *
 *   wait  (default) one connection to the control socket per conversation;
 *         right after each append a {"cmd":"wait","id","offset": end of the
 *         line} request goes out on it, and a reader thread per connection
 *         takes the time each answer arrives.  This is what the store does
 *         after a write (jm_daemon_wait; the wait request also tells the
 *         daemon which file changed, so it need not wait for the watch).
 *   poll  nobody tells the daemon anything: the file watch alone drives it.
 *         One observer thread reads the `sources` offsets from the mirror
 *         (a read-only connection) every 200 us; an append is visible at the
 *         first poll that shows its offset.  Resolution: the poll period plus
 *         one query.
 *
 * Prints one JSON object: appends, achieved rate, p50/p90/p99/max/mean ms,
 * timeouts (appends never seen ingested), the longest schedule lateness.
 */
#include <jansson.h>
#include <jmirror/jmirror.h>
#include <sqlite3.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t) {
  struct timespec ts;
  ts.tv_sec = (time_t)t;
  ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
    ;
}

typedef struct item {
  int conv;
  uint64_t end;
  double t0; /* just before the append call */
  double t1; /* seen ingested (0: not yet) */
  int failed;
} item;

static struct {
  const char *db;
  int nconv, observe_poll;
  item *items;
  size_t n;        /* planned */
  size_t appended; /* published (under mu) */
  size_t resolved; /* under mu */
  int stop;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void conv_name(char out[16], int k) {
  snprintf(out, 16, "lat-%02d", k);
}

/* Wait mode: one connection per conversation.  The main thread writes a
 * wait request on it right after each append; requests on one connection
 * are answered in order, and a conversation's offsets only grow, so the
 * answers arrive in append order and each one is timed as it arrives (the
 * daemon reads the next request as soon as it has answered the previous:
 * pipelining costs microseconds, and no append waits for a free waiter). */
static int *conn_fd;

static int connect_sock(const char *db) {
  struct sockaddr_un a;
  memset(&a, 0, sizeof a);
  a.sun_family = AF_UNIX;
  if (snprintf(a.sun_path, sizeof a.sun_path, "%s.sock", db) >=
      (int)sizeof a.sun_path)
    return -1;
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static void *reader(void *arg) {
  int k = (int)(intptr_t)arg, fd = conn_fd[k];
  char buf[65536];
  size_t have = 0, pos = 0; /* pos: answers seen on this connection */
  for (;;) {
    ssize_t r = read(fd, buf + have, sizeof buf - have);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    double t = now_s();
    have += (size_t)r;
    char *line = buf, *nl;
    while ((nl = memchr(line, '\n', have - (size_t)(line - buf))) != NULL) {
      *nl = '\0';
      int ok = strstr(line, "\"ok\":true") != NULL;
      pthread_mutex_lock(&g.mu);
      size_t i = (size_t)k + pos * (size_t)g.nconv;
      if (i < g.appended) {
        if (ok)
          g.items[i].t1 = t;
        else
          g.items[i].failed = 1;
        g.resolved++;
      }
      pos++;
      pthread_cond_broadcast(&g.cv);
      pthread_mutex_unlock(&g.mu);
      line = nl + 1;
    }
    have -= (size_t)(line - buf);
    memmove(buf, line, have);
    if (have == sizeof buf)
      break; /* a line longer than any answer: give up */
  }
  return NULL;
}

static void *observer(void *arg) {
  (void)arg;
  sqlite3 *db;
  sqlite3_stmt *st = NULL;
  if (sqlite3_open_v2(g.db, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
      sqlite3_prepare_v2(db,
                         "SELECT conversation_id, byte_offset FROM sources"
                         " WHERE conversation_id >= 'lat-' AND"
                         " conversation_id < 'lat.'",
                         -1, &st, NULL) != SQLITE_OK) {
    fprintf(stderr, "jm_latency: cannot read the mirror: %s\n",
            sqlite3_errmsg(db));
    sqlite3_close(db);
    pthread_mutex_lock(&g.mu);
    g.stop = 2;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    return NULL;
  }
  sqlite3_busy_timeout(db, 1000);
  size_t *pos =
      calloc((size_t)g.nconv, sizeof *pos); /* next unresolved per conv */
  uint64_t *off = calloc((size_t)g.nconv, sizeof *off);
  for (;;) {
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *id = (const char *)sqlite3_column_text(st, 0);
      int k = atoi(id + 4);
      if (k >= 0 && k < g.nconv)
        off[k] = (uint64_t)sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    double t = now_s();
    pthread_mutex_lock(&g.mu);
    for (int k = 0; k < g.nconv; k++)
      for (;;) {
        size_t i = (size_t)k + pos[k] * (size_t)g.nconv;
        if (i >= g.appended || g.items[i].end > off[k])
          break;
        g.items[i].t1 = t;
        pos[k]++;
        g.resolved++;
      }
    int done = g.stop && g.resolved >= g.appended;
    if (g.stop == 2)
      done = 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    if (done || rc != SQLITE_DONE)
      break;
    sleep_until(now_s() + 0.0002);
  }
  free(pos);
  free(off);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return NULL;
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

int main(int argc, char **argv) {
  const char *root = NULL, *db = NULL;
  double rate = 1000, seconds = 10;
  int nconv = 20;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(a, "--db") == 0 && v)
      db = argv[++i];
    else if (strcmp(a, "--rate") == 0 && v)
      rate = atof(argv[++i]);
    else if (strcmp(a, "--seconds") == 0 && v)
      seconds = atof(argv[++i]);
    else if (strcmp(a, "--conversations") == 0 && v)
      nconv = atoi(argv[++i]);
    else if (strcmp(a, "--observe") == 0 && v) {
      v = argv[++i];
      if (strcmp(v, "poll") == 0)
        g.observe_poll = 1;
      else if (strcmp(v, "wait") != 0)
        goto usage;
    } else if (a[0] != '-' && root == NULL)
      root = a;
    else
      goto usage;
  }
  if (root == NULL || rate <= 0 || seconds <= 0 || nconv < 1 || nconv > 100)
    goto usage;
  char *dbp = db ? strdup(db) : jm_mirror_resolve_path(root, NULL);
  g.db = dbp;
  g.nconv = nconv;
  g.n = (size_t)(rate * seconds);
  if (g.n == 0)
    g.n = 1;
  g.items = calloc(g.n, sizeof *g.items);

  jm_error err;
  jm_error_clear(&err);
  jm_journal_options jo;
  jm_journal_options_init(&jo);
  jo.sync = JM_SYNC_NONE;
  jm_journal *j;
  if (jm_journal_open(&j, root, &jo, &err) != 0) {
    fprintf(stderr, "jm_latency: %s\n", err.msg);
    return 1;
  }
  /* Create the conversations and make sure the daemon has them. */
  for (int k = 0; k < nconv; k++) {
    char name[16];
    conv_name(name, k);
    static const char created[] =
        "{\"type\":\"conversation.created\",\"title\":\"latency\"}";
    jm_append_info info;
    if (jm_journal_append(j, name, created, sizeof created - 1, &info, &err) !=
            0 ||
        jm_daemon_wait(dbp, name, info.end, 10000, &err) != 0) {
      fprintf(stderr, "jm_latency: %s\n", err.msg);
      jm_journal_close(j, NULL);
      return 1;
    }
  }

  pthread_t obs, *rs = calloc((size_t)nconv, sizeof *rs);
  conn_fd = calloc((size_t)nconv, sizeof *conn_fd);
  int nthreads = 0;
  if (g.observe_poll)
    pthread_create(&obs, NULL, observer, NULL);
  else
    for (; nthreads < nconv; nthreads++) {
      if ((conn_fd[nthreads] = connect_sock(dbp)) < 0) {
        fprintf(stderr, "jm_latency: cannot connect to %s.sock: %s\n", dbp,
                strerror(errno));
        return 1;
      }
      pthread_create(&rs[nthreads], NULL, reader, (void *)(intptr_t)nthreads);
    }
  sleep_until(now_s() + 0.2);

  static const char content[] =
      "Could you look at the journal offsets again? The mirror seems to be "
      "one transaction behind after the restart, 그리고 검색 결과도 조금 "
      "이상해요. Here is what I tried: replay and verify.";
  char ev[512];
  double start = now_s() + 0.01, late_max = 0;
  int rc = 0;
  for (size_t i = 0; i < g.n; i++) {
    double target = start + (double)i / rate;
    sleep_until(target);
    item *it = &g.items[i];
    it->conv = (int)(i % (size_t)nconv);
    char name[16];
    conv_name(name, it->conv);
    int len = snprintf(ev, sizeof ev,
                       "{\"type\":\"message\",\"id\":\"l%08zu\",\"role\":"
                       "\"user\",\"content\":\"%s\"}",
                       i, content);
    jm_append_info info;
    it->t0 = now_s();
    if (it->t0 - target > late_max)
      late_max = it->t0 - target;
    if (jm_journal_append(j, name, ev, (size_t)len, &info, &err) != 0) {
      fprintf(stderr, "jm_latency: %s\n", err.msg);
      rc = 1;
      break;
    }
    it->end = info.end;
    pthread_mutex_lock(&g.mu);
    g.appended = i + 1;
    pthread_cond_broadcast(&g.cv);
    pthread_mutex_unlock(&g.mu);
    if (!g.observe_poll) {
      char req[160];
      int rl = snprintf(req, sizeof req,
                        "{\"cmd\":\"wait\",\"id\":\"%s\",\"offset\":%llu,"
                        "\"timeout_ms\":10000}\n",
                        name, (unsigned long long)it->end);
      if (write_all(conn_fd[it->conv], req, (size_t)rl) != 0) {
        fprintf(stderr, "jm_latency: cannot send to the daemon: %s\n",
                strerror(errno));
        rc = 1;
        break;
      }
    }
  }
  double end = now_s();
  /* Let everything resolve (bounded), then stop the threads. */
  pthread_mutex_lock(&g.mu);
  while (g.resolved < g.appended && g.stop != 2 && now_s() < end + 15) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 100000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&g.cv, &g.mu, &ts);
  }
  if (g.stop == 0)
    g.stop = 1;
  if (g.observe_poll)
    g.resolved = g.appended; /* what is not resolved now times out */
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
  if (g.observe_poll)
    pthread_join(obs, NULL);
  for (int t = 0; t < nthreads; t++) {
    shutdown(conn_fd[t], SHUT_RDWR); /* wakes its reader */
    pthread_join(rs[t], NULL);
    close(conn_fd[t]);
  }
  jm_journal_close(j, NULL);

  size_t n = g.appended, nl = 0, timeouts = 0;
  double *lat = malloc((n ? n : 1) * sizeof *lat), sum = 0;
  for (size_t i = 0; i < n; i++) {
    item *it = &g.items[i];
    if (it->t1 > 0) {
      lat[nl++] = (it->t1 - it->t0) * 1000;
      sum += lat[nl - 1];
    } else
      timeouts++;
  }
  qsort(lat, nl, sizeof *lat, cmp_double);
  printf("{\"observe\":\"%s\",\"rate\":%.1f,\"seconds\":%.3f,"
         "\"conversations\":%d,\"appends\":%zu,"
         "\"achieved_rate\":%.1f,\"p50_ms\":%.4f,\"p90_ms\":%.4f,"
         "\"p99_ms\":%.4f,\"max_ms\":%.4f,\"mean_ms\":%.4f,\"timeouts\":%zu,"
         "\"schedule_late_max_ms\":%.3f}\n",
         g.observe_poll ? "poll" : "wait", rate, end - start, nconv, n,
         end > start ? (double)n / (end - start) : 0, pct(lat, nl, 0.5),
         pct(lat, nl, 0.9), pct(lat, nl, 0.99), nl ? lat[nl - 1] : 0,
         nl ? sum / (double)nl : 0, timeouts, late_max * 1000);
  free(lat);
  free(rs);
  free(conn_fd);
  free(g.items);
  free(dbp);
  return rc;

usage:
  fprintf(stderr, "usage: jm_latency ROOT [--db DB] [--rate R] [--seconds S]"
                  " [--conversations K] [--observe wait|poll]\n");
  return 2;
}
