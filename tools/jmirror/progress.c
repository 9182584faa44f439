/*
 * progress.c - a progress line for long work, on a terminal only.
 *
 * Long commands (replay --all, verify, backup) report progress through a
 * jm_progress_fn.  On a TTY stderr gets one self-overwriting line, at most
 * ten updates a second; piped, nothing is printed, so logs and scripts see
 * only the summary.
 */
#include "cli.h"

#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

void progress_init(progress *p, const char *label) {
  memset(p, 0, sizeof *p);
  p->label = label;
  p->tty = isatty(STDERR_FILENO) && getenv("JMIRROR_NO_PROGRESS") == NULL;
  p->t0 = now_s();
}

void progress_cb(void *ctx, uint64_t done, uint64_t total) {
  progress *p = ctx;
  if (!p->tty)
    return;
  double t = now_s();
  if (t - p->last < 0.1 && done < total)
    return;
  p->last = t;
  p->shown = 1;
  if (total == 0) { /* a count without a known end */
    fprintf(stderr, "\r%s %llu ", p->label, (unsigned long long)done);
    fflush(stderr);
    return;
  }
  double frac = total ? (double)done / (double)total : 1.0;
  if (frac > 1)
    frac = 1;
  char bar[31];
  int fill = (int)(frac * 30);
  for (int i = 0; i < 30; i++)
    bar[i] = i < fill ? '#' : '.';
  bar[30] = '\0';
  double el = t - p->t0;
  double eta = frac > 0.01 ? el / frac - el : 0;
  fprintf(stderr, "\r%s [%s] %3.0f%% %.1f/%.1f MB  %.0fs left ", p->label,
          bar, frac * 100, (double)done / 1e6, (double)total / 1e6, eta);
  fflush(stderr);
}

void progress_done(progress *p) {
  if (p->tty && p->shown)
    fprintf(stderr, "\r\033[K");
  fflush(stderr);
}
