/*
 * id.c - conversation ids: the check every entry point runs, and generation.
 *
 * A conversation id names a file, so it is the one input that could reach
 * outside journal/.  Valid: 1 to 128 bytes of [a-z0-9._-], not starting with
 * '.'.  That excludes "", ".", "..", any '/', NUL, upper case (two ids must
 * never name one file on a case-insensitive file system) and everything
 * non-ASCII.  Nothing is ever created from an id that fails this check.
 *
 * Generated ids are ULIDs in lower-case Crockford base32: 48 bits of
 * milliseconds then 80 random bits (libuv's uv_random), 26 characters, so
 * ids sort by creation time and never collide in practice.  They are
 * monotonic within a process: an id that would not sort after the last one
 * made (same millisecond, or a clock step back) is the last one plus one in
 * its random part, as monotonic ULIDs do.
 */
#include "internal.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <uv.h>

static int id_byte_ok(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

static void quote_id(char *out, size_t cap, const char *id, size_t n) {
  /* Show an id in an error message without letting control bytes through. */
  size_t o = 0;
  for (size_t i = 0; i < n && o + 5 < cap; i++) {
    unsigned char c = (unsigned char)id[i];
    if (c >= 0x20 && c < 0x7f && c != '\'')
      out[o++] = (char)c;
    else
      o += (size_t)snprintf(out + o, cap - o, "\\x%02x", c);
    if (i == 40 && n > 48) {
      o += (size_t)snprintf(out + o, cap - o, "...");
      break;
    }
  }
  out[o] = '\0';
}

int jm_id_check(const char *id, size_t n, jm_error *err) {
  char shown[96];
  if (id == NULL || n == 0)
    return jm__errf(err, JM_EID, "invalid conversation id '': empty");
  quote_id(shown, sizeof shown, id, n);
  if (n > JM_ID_MAX)
    return jm__errf(err, JM_EID,
                    "invalid conversation id '%s': %zu bytes, at most %d",
                    shown, n, JM_ID_MAX);
  if (id[0] == '.')
    return jm__errf(err, JM_EID,
                    "invalid conversation id '%s': must not start with '.'",
                    shown);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)id[i];
    if (!id_byte_ok(c))
      return jm__errf(err, JM_EID,
                      "invalid conversation id '%s': byte %zu is not one of "
                      "[a-z0-9._-]",
                      shown, i);
  }
  return 0;
}

static const char b32[] = "0123456789abcdefghjkmnpqrstvwxyz";
static pthread_mutex_t gen_mu = PTHREAD_MUTEX_INITIALIZER;
static char gen_last[27]; /* the last id this process made */

/* Make out sort after the last id made; remember it. */
static void monotonic(char out[27]) {
  pthread_mutex_lock(&gen_mu);
  if (strcmp(out, gen_last) <= 0) {
    memcpy(out, gen_last, sizeof gen_last);
    for (int i = 25; i >= 10; i--) {
      const char *d = strchr(b32, out[i]);
      if (d[1] != '\0') {
        out[i] = d[1];
        break;
      }
      out[i] = '0'; /* carry */
    }
  }
  memcpy(gen_last, out, sizeof gen_last);
  pthread_mutex_unlock(&gen_mu);
}

int jm__id_generate(char out[27]) {
  unsigned char rnd[10];
  int rc = uv_random(NULL, NULL, rnd, sizeof rnd, 0, NULL);
  if (rc != 0)
    return rc;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  /* 10 chars of time (50 bits, top 2 zero), most significant first. */
  for (int i = 9; i >= 0; i--) {
    out[i] = b32[ms & 31];
    ms >>= 5;
  }
  /* 16 chars of randomness: 80 bits, 5 at a time. */
  uint64_t acc = 0;
  int bits = 0, k = 0;
  for (int i = 10; i < 26; i++) {
    if (bits < 5) {
      acc = (acc << 8) | rnd[k++];
      bits += 8;
    }
    out[i] = b32[(acc >> (bits - 5)) & 31];
    bits -= 5;
  }
  out[26] = '\0';
  monotonic(out);
  return 0;
}
