/*
 * jmirror/error.h - the one error convention of the library.
 *
 * Every library call returns 0 (or a non-negative count) on success and a
 * negative code on failure: -errno for an operating-system error, or one of
 * the JM_E* codes below (a range far from any errno).  jm_strerror() names
 * both kinds.  The library never prints and never exits.
 *
 * Calls that can fail in a way a user must act on also take an optional
 * jm_error * (NULL is allowed).  It receives the same code plus one line of
 * text that names what failed and where ("cannot open 'journal/x.jsonl':
 * Permission denied").  The text is lowercase, has no trailing newline and
 * no program name: the caller prefixes "jmirror: " when it prints.
 */
#ifndef JMIRROR_ERROR_H
#define JMIRROR_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
  JM_EID = -30001,       /* invalid conversation id */
  JM_EEVENT = -30002,    /* event does not satisfy the journal format */
  JM_ELOCKED = -30003,   /* another process holds the lock */
  JM_ESCHEMA = -30004,   /* mirror schema newer than this binary */
  JM_ESQLITE = -30005,   /* SQLite reported an error (see the message) */
  JM_ECORRUPT = -30006,  /* data that should be well-formed is not */
  JM_ENOTFOUND = -30007, /* no such conversation / message / file */
  JM_EPROTO = -30008,    /* control-socket protocol violation */
  JM_ETIMEDOUT = -30009, /* a bounded wait ran out */
  JM_EUSAGE = -30010,    /* the caller passed arguments that make no sense */
  JM_ENODAEMON = -30011, /* no daemon answers on the control socket */
  JM_EDRIFT = -30012,    /* the mirror disagrees with the journal */
  JM_ECANCELED = -30013, /* work stopped on request (signal) */
};

#define JM_ERROR_MSG_MAX 512

typedef struct jm_error {
  int code;                   /* 0, -errno or a JM_E* code */
  char msg[JM_ERROR_MSG_MAX]; /* one line naming what and where; "" if none */
} jm_error;

/* Static text for any code this library returns (never NULL). */
const char *jm_strerror(int code);

/* Reset an error record to "no error".  Safe on NULL. */
void jm_error_clear(jm_error *err);

#ifdef __cplusplus
}
#endif
#endif
