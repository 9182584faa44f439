/*
 * jm_writer.c - appends per second through the writer library (benchmarks).
 *
 *   jm_writer ROOT none|batch|always N [CONVERSATIONS]
 *
 * Appends N events of about 300 bytes (a complete user message, ts filled
 * in by the library) round-robin to CONVERSATIONS conversations (default 4)
 * under ROOT/journal with jm_journal_append() in the given durability mode.
 * The time runs from the first append to the end of jm_journal_close()
 * (which syncs what a batch writer has not synced yet).  Prints one JSON
 * object: mode, appends, bytes, seconds, appends_per_second, syncs, and the
 * latency of one append call (p50/p99/max, ms).
 */
#include <jmirror/jmirror.h>

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

int main(int argc, char **argv) {
  if (argc < 4 || argc > 5) {
    fprintf(stderr,
            "usage: jm_writer ROOT none|batch|always N [CONVERSATIONS]\n");
    return 2;
  }
  jm_journal_options opt;
  jm_journal_options_init(&opt);
  if (jm_sync_parse(argv[2], &opt.sync) != 0) {
    fprintf(stderr, "jm_writer: unknown mode '%s'\n", argv[2]);
    return 2;
  }
  long n = strtol(argv[3], NULL, 10);
  long nconv = argc == 5 ? strtol(argv[4], NULL, 10) : 4;
  if (n <= 0 || nconv <= 0 || nconv > 1000) {
    fprintf(stderr, "jm_writer: bad N or CONVERSATIONS\n");
    return 2;
  }
  jm_error err;
  jm_error_clear(&err);
  jm_journal *j;
  if (jm_journal_open(&j, argv[1], &opt, &err) != 0) {
    fprintf(stderr, "jm_writer: %s\n", err.msg);
    return 1;
  }
  /* ~230 bytes of content; with type, id, role and ts about 300 bytes. */
  static const char content[] =
      "Could you look at the journal offsets again? The mirror seems to be "
      "one transaction behind after the restart, 그리고 검색 결과도 조금 "
      "이상해요. Here is what I tried: replay, verify --repair, and a full "
      "rebuild.";
  double *lat = malloc((size_t)n * sizeof *lat);
  char ev[512], conv[32];
  uint64_t bytes = 0;
  double t0 = now_s();
  for (long i = 0; i < n; i++) {
    snprintf(conv, sizeof conv, "writer-%03ld", i % nconv);
    int len = snprintf(ev, sizeof ev,
                       "{\"type\":\"message\",\"id\":\"w%09ld\",\"role\":"
                       "\"user\",\"content\":\"%s\"}",
                       i, content);
    jm_append_info info;
    double a = now_s();
    if (jm_journal_append(j, conv, ev, (size_t)len, &info, &err) != 0) {
      fprintf(stderr, "jm_writer: %s\n", err.msg);
      free(lat);
      jm_journal_close(j, NULL);
      return 1;
    }
    lat[i] = (now_s() - a) * 1000;
    bytes += info.end - info.offset;
  }
  jm_journal_stats st;
  jm_journal_get_stats(j, &st);
  if (jm_journal_close(j, &err) != 0) {
    fprintf(stderr, "jm_writer: %s\n", err.msg);
    free(lat);
    return 1;
  }
  double secs = now_s() - t0;
  qsort(lat, (size_t)n, sizeof *lat, cmp_double);
  printf("{\"mode\":\"%s\",\"appends\":%ld,\"bytes\":%llu,\"seconds\":%.6f,"
         "\"appends_per_second\":%.1f,\"syncs\":%llu,\"append_p50_ms\":%.4f,"
         "\"append_p99_ms\":%.4f,\"append_max_ms\":%.4f}\n",
         jm_sync_name(opt.sync), n, (unsigned long long)bytes, secs,
         (double)n / secs, (unsigned long long)st.syncs,
         pct(lat, (size_t)n, 0.5), pct(lat, (size_t)n, 0.99), lat[n - 1]);
  free(lat);
  return 0;
}
