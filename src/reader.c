/*
 * reader.c - the incremental line reader: bytes in, lines out.
 *
 * Framing rules (docs/journal.md, section "Lines"):
 *  - a line is the bytes up to and including an LF; one trailing CR before
 *    the LF is dropped;
 *  - lines are numbered from 1 by physical position: blank and bad lines
 *    count too;
 *  - bytes after the last LF are a pending tail, never a line: a writer may
 *    still be appending them;
 *  - a blank line (only spaces, tabs, CR) is skipped silently, whatever its
 *    length (an overlong one too: it is blank, not bad);
 *  - a line whose content exceeds the maximum is reported too_long without
 *    being buffered: once a partial line grows past the maximum the reader
 *    stops keeping its bytes and only looks for its LF, so memory stays
 *    bounded by the maximum whatever the file holds.
 *
 * Buffers: a line that lies wholly inside the fed chunk is handed out in
 * place (no copy); only a line that spans chunks is assembled in `carry`.
 * Every driver (daemon read callback, replay/verify loops, the writer's
 * validation) goes through jm_reader_next(), so they cannot disagree.
 */
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jm_reader {
  char *conv_id;      /* file's id for the conversation_id check, or NULL */
  size_t max_line;    /* content bytes allowed per line */
  uint64_t offset;    /* file offset just past the last LF consumed */
  uint64_t line;      /* lines consumed so far */
  const char *chunk;  /* borrowed: bytes fed and not yet consumed */
  size_t chunk_len;
  size_t chunk_pos;
  jm__buf carry;      /* start of a line that began in an earlier chunk */
  int overlong;       /* carry exceeded the maximum: discarding to LF */
  int blank;          /* overlong: every byte discarded so far was blank */
  int raw;            /* frame only: hand out lines unparsed */
  uint64_t stop_at;   /* never start a line at or past this offset */
  uint64_t carry_len; /* bytes of the current partial line seen so far */
  jm_event held;      /* event handed out last; released on next call */
};

jm_reader *jm_reader_new(const char *conv_id, size_t max_line) {
  jm_reader *r = calloc(1, sizeof *r);
  if (r == NULL)
    return NULL;
  if (conv_id != NULL && (r->conv_id = jm__strdup(conv_id)) == NULL) {
    free(r);
    return NULL;
  }
  r->max_line = max_line ? max_line : JM_MAX_LINE_DEFAULT;
  r->stop_at = UINT64_MAX;
  return r;
}

void jm_reader_free(jm_reader *r) {
  if (r == NULL)
    return;
  jm_event_release(&r->held);
  jm__buf_release(&r->carry);
  free(r->conv_id);
  free(r);
}

void jm_reader_set_raw(jm_reader *r, int raw) { r->raw = raw; }

void jm__reader_stop_at(jm_reader *r, uint64_t offset) { r->stop_at = offset; }

void jm_reader_seek(jm_reader *r, uint64_t offset, uint64_t line) {
  jm_event_release(&r->held);
  r->offset = offset;
  r->line = line;
  r->chunk = NULL;
  r->chunk_len = r->chunk_pos = 0;
  r->carry.len = 0;
  r->carry_len = 0;
  r->overlong = 0;
}

void jm_reader_feed(jm_reader *r, const void *buf, size_t len) {
  r->chunk = buf;
  r->chunk_len = len;
  r->chunk_pos = 0;
}

uint64_t jm_reader_offset(const jm_reader *r) { return r->offset; }
uint64_t jm_reader_line(const jm_reader *r) { return r->line; }
uint64_t jm_reader_pending(const jm_reader *r) {
  return r->carry_len + (r->chunk_len - r->chunk_pos);
}

static int is_blank(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r')
      return 0;
  return 1;
}

/* Keep the unterminated rest of the chunk; stop keeping past the max. */
static int stash_tail(jm_reader *r) {
  size_t n = r->chunk_len - r->chunk_pos;
  const char *p = r->chunk + r->chunk_pos;
  r->chunk_pos = r->chunk_len;
  r->carry_len += n;
  if (r->overlong) {
    r->blank = r->blank && is_blank(p, n);
    return 0;
  }
  /* +1: a line of exactly max bytes may still be followed by a CR. */
  if (r->carry_len > (uint64_t)r->max_line + 1) {
    r->overlong = 1;
    r->blank = is_blank(r->carry.p, r->carry.len) && is_blank(p, n);
    jm__buf_release(&r->carry);
    return 0;
  }
  return jm__buf_append(&r->carry, p, n);
}

/* Classify one complete line (content without LF) into *out. */
static int classify(jm_reader *r, const char *p, size_t n, int overlong,
                    jm_read *out) {
  if (!overlong && n > 0 && p[n - 1] == '\r')
    n--;
  out->raw = overlong ? NULL : p;
  out->raw_len = overlong ? 0 : n;
  if (overlong || n > r->max_line) {
    out->bad.reason = JM_BAD_TOO_LONG;
    snprintf(out->bad.msg, sizeof out->bad.msg,
             "line of %llu bytes exceeds the maximum of %zu",
             (unsigned long long)(out->end - out->offset - 1), r->max_line);
    out->raw = NULL;
    out->raw_len = 0;
    return JM_READ_BAD;
  }
  if (r->raw)
    return JM_READ_LINE;
  int rc = jm_event_parse(p, n, r->conv_id, r->max_line, &out->event,
                          &out->bad);
  if (rc < 0)
    return rc;
  if (rc == JM_EVENT_BAD)
    return JM_READ_BAD;
  r->held = out->event; /* released at the next call */
  return JM_READ_EVENT;
}

int jm_reader_next(jm_reader *r, jm_read *out) {
  jm_event_release(&r->held);
  memset(&out->event, 0, sizeof out->event);
  out->bad.reason = JM_BAD_NONE;
  out->bad.msg[0] = '\0';
  for (;;) {
    if (r->chunk == NULL || r->chunk_pos >= r->chunk_len)
      return JM_READ_NEED_MORE;
    if (r->carry_len == 0 && r->offset >= r->stop_at)
      return JM_READ_NEED_MORE; /* the next line is someone else's */
    const char *start = r->chunk + r->chunk_pos;
    size_t avail = r->chunk_len - r->chunk_pos;
    const char *nl = memchr(start, '\n', avail);
    if (nl == NULL) {
      if (stash_tail(r) != 0)
        return -ENOMEM;
      return JM_READ_NEED_MORE;
    }
    size_t seg = (size_t)(nl - start); /* bytes before LF in this chunk */
    r->chunk_pos += seg + 1;
    const char *p = start;
    size_t n = seg;
    int overlong = r->overlong;
    int blank = r->blank; /* of the bytes an overlong line discarded */
    uint64_t total = r->carry_len + seg; /* content bytes incl. CR */
    if (r->carry_len > 0 && !overlong) {
      if (total > (uint64_t)r->max_line + 1) {
        overlong = 1;
        blank = is_blank(r->carry.p, r->carry.len);
      } else if (jm__buf_append(&r->carry, start, seg) != 0)
        return -ENOMEM;
      p = r->carry.p;
      n = r->carry.len;
    }
    out->line = ++r->line;
    out->offset = r->offset;
    out->end = r->offset + total + 1;
    r->offset = out->end;
    r->carry.len = 0;
    r->carry_len = 0;
    r->overlong = 0;
    if (!overlong && total > (uint64_t)r->max_line + 1) {
      overlong = 1;
      blank = 1;
    }
    if (overlong ? blank && is_blank(start, seg) : is_blank(p, n))
      continue;
    return classify(r, p, n, overlong, out);
  }
}
