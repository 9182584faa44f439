/*
 * jmirror/reader.h - events and the incremental line reader.
 *
 * One parser, several drivers: the daemon feeds the reader whatever a read
 * returned, `replay` and `verify` feed it in a blocking loop, and the writer
 * validates with jm_event_parse() before it touches the disk.  They cannot
 * disagree about what a line means because they share this code.
 *
 * The format is docs/journal.md (spec: journal format version 1).
 */
#ifndef JMIRROR_READER_H
#define JMIRROR_READER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

struct json_t; /* jansson's value type; meta/usage are handed out as-is */

#define JM_MAX_LINE_DEFAULT ((size_t)64 * 1024 * 1024) /* content bytes */
#define JM_TS_LEN 27 /* "2026-11-20T09:15:02.120000Z" */
#define JM_ID_MAX 128  /* conversation id bytes */
#define JM_MSG_ID_MAX 256 /* message id bytes */
#define JM_FORMAT_VERSION 1
#define JM_MAX_DEPTH 100 /* arrays/objects nested deeper make a bad line */

typedef enum jm_event_type {
  JM_EV_UNKNOWN = 0, /* a valid line whose type this version does not know */
  JM_EV_CONVERSATION_CREATED,
  JM_EV_CONVERSATION_UPDATED,
  JM_EV_CONVERSATION_DELETED,
  JM_EV_CONVERSATION_RESTORED,
  JM_EV_MESSAGE,
  JM_EV_MESSAGE_DELTA,
  JM_EV_MESSAGE_END,
  JM_EV_MESSAGE_EDITED,
  JM_EV_MESSAGE_DELETED,
} jm_event_type;

/* Whether an optional member was absent, JSON null, or set. */
typedef enum jm_presence { JM_ABSENT = 0, JM_NULL = 1, JM_SET = 2 } jm_presence;

/* A string member: bytes (may contain NUL; always NUL-terminated) + length. */
typedef struct jm_str {
  const char *p;     /* NULL unless state == JM_SET */
  size_t n;          /* length in bytes */
  jm_presence state; /* absent / null / set */
} jm_str;

/* A member of any JSON type (meta, usage). */
typedef struct jm_any {
  struct json_t *v;  /* borrowed from the event's root; NULL unless JM_SET */
  jm_presence state;
} jm_any;

/*
 * A validated event.  Every pointer borrows from `root`, which the event
 * owns: it lives until jm_event_release() (or, for events handed out by a
 * reader, until the next jm_reader_next() / jm_reader_free()).
 */
typedef struct jm_event {
  jm_event_type type;
  char ts[JM_TS_LEN + 1]; /* normalised: exactly 6 fractional digits */
  jm_str type_name;       /* the "type" member as written */
  jm_str id, role, content, parent_id, brain, reasoning_level, thinking;
  jm_str text, title, stop_reason;
  jm_any meta, usage;
  struct json_t *root; /* the whole object */
} jm_event;

/* Why a line is bad.  Checked in this order; the first fault wins. */
typedef enum jm_bad_reason {
  JM_BAD_NONE = 0,
  JM_BAD_TOO_LONG,
  JM_BAD_INVALID_UTF8,
  JM_BAD_INVALID_JSON,
  JM_BAD_NOT_OBJECT,
  JM_BAD_DUPLICATE_KEY,
  JM_BAD_UNSUPPORTED_VERSION,
  JM_BAD_CONVERSATION_MISMATCH,
  JM_BAD_MISSING_MEMBER,
  JM_BAD_BAD_TS,
  JM_BAD_WRONG_TYPE,
} jm_bad_reason;

typedef struct jm_bad {
  jm_bad_reason reason;
  char msg[256]; /* "message: missing required member 'role'" */
} jm_bad;

/* "too_long", "invalid_utf8", ... (the spec's category names). */
const char *jm_bad_reason_name(jm_bad_reason reason);

enum { JM_EVENT_OK = 0, JM_EVENT_BAD = 1 };

/*
 * Parse and validate one line's content (no LF; a trailing CR is the
 * caller's to drop).  `conv_id` is the file's conversation id, or NULL to
 * skip the conversation_id check.  Returns JM_EVENT_OK with *ev filled (call
 * jm_event_release), JM_EVENT_BAD with *bad filled, or -ENOMEM.
 * A pure function: it touches nothing but its outputs.
 */
int jm_event_parse(const char *line, size_t len, const char *conv_id,
                   size_t max_line, jm_event *ev, jm_bad *bad);
void jm_event_release(jm_event *ev);

/* Type names as written in the journal ("message.delta"); NULL if unknown. */
const char *jm_event_type_name(jm_event_type type);

/* ------------------------------------------------------------------ */
/* The incremental reader.                                              */

typedef struct jm_reader jm_reader;

typedef enum jm_read_status {
  JM_READ_NEED_MORE = 0, /* the fed bytes are used up; feed more */
  JM_READ_EVENT = 1,     /* out->event holds a valid line */
  JM_READ_BAD = 2,       /* out->bad says why this line is bad */
  JM_READ_LINE = 3,      /* raw mode: out->raw is a non-blank line */
} jm_read_status;

typedef struct jm_read {
  uint64_t line;      /* 1-based physical line number */
  uint64_t offset;    /* 0-based byte offset of the line's first byte */
  uint64_t end;       /* byte offset just past the line's LF */
  const char *raw;    /* line content without CR/LF; NULL for too_long */
  size_t raw_len;
  jm_event event;     /* JM_READ_EVENT; valid until the next call */
  jm_bad bad;         /* JM_READ_BAD */
} jm_read;

/* conv_id may be NULL (no conversation_id check); max_line 0 = default. */
jm_reader *jm_reader_new(const char *conv_id, size_t max_line);
void jm_reader_free(jm_reader *r);

/*
 * Raw mode: frame lines only.  Non-blank lines come back as JM_READ_LINE
 * (out->raw) without being parsed; too_long is still JM_READ_BAD.
 */
void jm_reader_set_raw(jm_reader *r, int raw);

/*
 * Start at a known line boundary: `offset` is a byte offset just past an LF
 * (or 0) and `line` the number of lines before it.  Drops any partial line.
 */
void jm_reader_seek(jm_reader *r, uint64_t offset, uint64_t line);

/*
 * Hand the reader the next bytes of the file.  The buffer is borrowed: it
 * must stay valid and unchanged until jm_reader_next() returns NEED_MORE.
 */
void jm_reader_feed(jm_reader *r, const void *buf, size_t len);

/*
 * Next line out of the fed bytes.  Blank lines are counted and skipped.
 * Returns a jm_read_status, or -ENOMEM.  Bytes after the last LF stay
 * pending (never a line) until more bytes complete them.
 */
int jm_reader_next(jm_reader *r, jm_read *out);

uint64_t jm_reader_offset(const jm_reader *r);  /* just past the last LF */
uint64_t jm_reader_line(const jm_reader *r);    /* lines seen so far */
uint64_t jm_reader_pending(const jm_reader *r); /* bytes after last LF */

/* ------------------------------------------------------------------ */
/* Conversation ids and timestamps.                                     */

/* 0 if `id` (n bytes) is a valid conversation id, else JM_EID + message. */
int jm_id_check(const char *id, size_t n, jm_error *err);

/*
 * Parse an RFC 3339 UTC timestamp per the format and write its normalised
 * form (27 chars + NUL) to out.  0 on success, -1 if it is not one.
 */
int jm_ts_normalise(const char *s, size_t n, char out[JM_TS_LEN + 1]);

/* The current time, normalised (microseconds). */
void jm_ts_now(char out[JM_TS_LEN + 1]);

#ifdef __cplusplus
}
#endif
#endif
