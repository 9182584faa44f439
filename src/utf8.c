/*
 * utf8.c - strict UTF-8 validation (RFC 3629).
 *
 * jansson validates UTF-8 too, but the format ranks invalid_utf8 before
 * invalid_json, so a line must be checked as bytes before it is parsed, and
 * jansson exposes no validator of its own.  Rejected: overlong forms,
 * UTF-16 surrogates (U+D800..U+DFFF) encoded as UTF-8, code points above
 * U+10FFFF, stray continuation bytes, truncated sequences, 0xC0/0xC1/0xF5+.
 * ASCII, the bulk of any journal, is skipped eight bytes at a time.
 */
#include "internal.h"

#include <string.h>

int jm__utf8_valid(const char *str, size_t n, size_t *bad_at) {
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < n) {
    if (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, s + i, 8);
      if ((w & UINT64_C(0x8080808080808080)) == 0) {
        i += 8;
        continue;
      }
    }
    unsigned char c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of 2nd byte */
    if (c >= 0xC2 && c <= 0xDF)
      len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0)
        lo = 0xA0; /* overlong */
      else if (c == 0xED)
        hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0)
        lo = 0x90; /* overlong */
      else if (c == 0xF4)
        hi = 0x8F; /* above U+10FFFF */
    } else
      goto bad;
    if (i + len > n)
      goto bad;
    if (s[i + 1] < lo || s[i + 1] > hi)
      goto bad;
    for (size_t k = 2; k < len; k++)
      if ((s[i + k] & 0xC0) != 0x80)
        goto bad;
    i += len;
  }
  return 1;
bad:
  if (bad_at)
    *bad_at = i;
  return 0;
}
