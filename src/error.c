/*
 * error.c - names for error codes and the jm_error helpers.
 *
 * See include/jmirror/error.h for the convention.  jm__errf() is the single
 * way library code fills a jm_error: it formats one line, strips any newline
 * a caller-supplied string smuggled in, and returns the code so that call
 * sites read "return jm__errf(err, JM_EID, ...)".
 */
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *jm_strerror(int code) {
  switch (code) {
  case 0: return "success";
  case JM_EID: return "invalid conversation id";
  case JM_EEVENT: return "invalid event";
  case JM_ELOCKED: return "locked by another process";
  case JM_ESCHEMA: return "mirror schema is newer than this program";
  case JM_ESQLITE: return "sqlite error";
  case JM_ECORRUPT: return "corrupt data";
  case JM_ENOTFOUND: return "not found";
  case JM_EPROTO: return "protocol error";
  case JM_ETIMEDOUT: return "timed out";
  case JM_EUSAGE: return "invalid usage";
  case JM_ENODAEMON: return "no daemon running";
  case JM_EDRIFT: return "mirror has drifted from the journal";
  case JM_ECANCELED: return "canceled";
  default:
    break;
  }
  if (code < 0 && code > -4096)
    return strerror(-code);
  return "unknown error";
}

void jm_error_clear(jm_error *err) {
  if (err == NULL)
    return;
  err->code = 0;
  err->msg[0] = '\0';
}

int jm__errf(jm_error *err, int code, const char *fmt, ...) {
  if (err == NULL)
    return code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->msg, sizeof err->msg, fmt, ap);
  va_end(ap);
  /* One line, always: a path or id with a newline must not split it. */
  for (char *p = err->msg; *p; p++)
    if (*p == '\n' || *p == '\r')
      *p = ' ';
  err->code = code;
  return code;
}

int jm__errno_f(jm_error *err, int errnum, const char *fmt, ...) {
  int code = -errnum;
  if (err == NULL)
    return code;
  char what[JM_ERROR_MSG_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  return jm__errf(err, code, "%s: %s", what, strerror(errnum));
}
