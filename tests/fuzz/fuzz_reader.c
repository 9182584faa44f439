/*
 * fuzz_reader.c - libFuzzer target: the line reader + event validation.
 *
 * The input is a journal file.  Its first byte picks a chunking and a
 * maximum line length; the rest is fed to the reader twice — whole, and in
 * chunks of the chosen sizes — and the two sequences of lines (status,
 * number, offsets, bad reason) must be identical, line numbers must grow,
 * offsets must be contiguous, and bytes consumed + pending must equal bytes
 * fed.  Every valid event is flattened for the fold (meta/usage
 * serialised) as the pipeline does.  Nothing may crash, hang or leak.
 */
#include <stdlib.h>
#include <string.h>

#include "fold.h"
#include "internal.h"

#define MAX_RECS 4096

typedef struct rec {
  int status;
  uint64_t line, offset, end;
  int reason;
} rec;

static void fail(const char *what) {
  fprintf(stderr, "fuzz_reader: invariant broken: %s\n", what);
  abort();
}

/* Read everything; record up to MAX_RECS lines.  Returns the count. */
static size_t run(const uint8_t *d, size_t n, size_t max_line,
                  unsigned chunking, rec *out) {
  jm_reader *r = jm_reader_new("c1", max_line);
  if (r == NULL)
    return 0;
  size_t pos = 0, k = 0;
  uint64_t last_line = 0, last_end = 0;
  while (pos < n) {
    size_t step = chunking ? 1 + (pos * 7 + chunking) % (chunking + 1) : n;
    if (step > n - pos)
      step = n - pos;
    jm_reader_feed(r, d + pos, step);
    jm_read rd;
    int st;
    while ((st = jm_reader_next(r, &rd)) != JM_READ_NEED_MORE) {
      if (st != JM_READ_EVENT && st != JM_READ_BAD)
        fail("status");
      if (rd.line <= last_line || rd.offset < last_end || rd.end <= rd.offset)
        fail("line numbers or offsets");
      if (rd.end > pos + step)
        fail("a line past the bytes fed");
      last_line = rd.line;
      last_end = rd.end;
      if (st == JM_READ_EVENT) {
        jm__fev fev;
        char *tmp = NULL;
        if (jm__fev_from_event(&rd.event, rd.line, &fev, &tmp) == 0 &&
            fev.ts == NULL)
          fail("event without ts");
        free(tmp);
      }
      if (k < MAX_RECS)
        out[k++] = (rec){st, rd.line, rd.offset, rd.end,
                         st == JM_READ_BAD ? (int)rd.bad.reason : 0};
    }
    pos += step;
  }
  if (jm_reader_offset(r) + jm_reader_pending(r) != n)
    fail("consumed + pending != fed");
  jm_reader_free(r);
  return k;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  unsigned knob = data[0];
  size_t max_line = (knob & 0x80) ? 48 : 0; /* exercise too_long cheaply */
  static rec a[MAX_RECS], b[MAX_RECS];
  size_t na = run(data + 1, size - 1, max_line, 0, a);
  size_t nb = run(data + 1, size - 1, max_line, (knob & 0x7f) % 13 + 1, b);
  if (na != nb || memcmp(a, b, na * sizeof *a) != 0)
    fail("chunked reading differs from whole");
  return 0;
}
