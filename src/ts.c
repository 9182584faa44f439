/*
 * ts.c - event timestamps: parse, check, normalise, and "now".
 *
 * The only accepted form is UTC RFC 3339 `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`,
 * upper-case T and Z, a real calendar date (Gregorian leap years), hours
 * 00-23, minutes 00-59, seconds 00-60 (a leap second is accepted anywhere,
 * since a journal cannot know the leap-second table).  Years 0000-9999.
 *
 * Normalised form: exactly six fractional digits, extra digits truncated,
 * missing ones zero-filled ("2026-11-20T09:15:02.120000Z"), so that byte
 * order of the strings is time order and SQLite can compare them as text.
 */
#include "internal.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static int digits(const char *s, int n, int *out) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9')
      return -1;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return 0;
}

static int days_in_month(int y, int m) {
  static const int d[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (m == 2 && ((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
    return 29;
  return d[m - 1];
}

int jm_ts_normalise(const char *s, size_t n, char out[JM_TS_LEN + 1]) {
  /* 0123456789012345678 */
  /* YYYY-MM-DDTHH:MM:SS */
  if (n < 20 || n > 30)
    return -1;
  int y, mo, d, h, mi, se;
  if (digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) ||
      s[7] != '-' || digits(s + 8, 2, &d) || s[10] != 'T' ||
      digits(s + 11, 2, &h) || s[13] != ':' || digits(s + 14, 2, &mi) ||
      s[16] != ':' || digits(s + 17, 2, &se))
    return -1;
  if (mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 ||
      mi > 59 || se > 60)
    return -1;
  size_t i = 19;
  char frac[6] = {'0', '0', '0', '0', '0', '0'};
  if (s[i] == '.') {
    size_t k = 0;
    i++;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
      if (k < 6)
        frac[k] = s[i];
      k++;
      i++;
    }
    if (k < 1 || k > 9)
      return -1;
  }
  if (i != n - 1 || s[i] != 'Z')
    return -1;
  memcpy(out, s, 19);
  out[19] = '.';
  memcpy(out + 20, frac, 6);
  out[26] = 'Z';
  out[27] = '\0';
  return 0;
}

void jm_ts_now(char out[JM_TS_LEN + 1]) {
  struct timespec ts;
  struct tm tm;
  clock_gettime(CLOCK_REALTIME, &ts);
  time_t secs = ts.tv_sec;
  gmtime_r(&secs, &tm);
  /* %04d etc. cannot overflow 28 bytes for years 0..9999. */
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
           tm.tm_min, tm.tm_sec, (long)(ts.tv_nsec / 1000));
  memcpy(out, buf, JM_TS_LEN);
  out[JM_TS_LEN] = '\0';
}
