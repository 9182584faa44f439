/*
 * fold.c - applying events to conversation and message state (spec section
 * 4; docs/mirror.md, "The fold").
 *
 * Conversation: created_at = ts of the first valid line, updated_at = the
 * greatest ts of any valid line; title/brain/meta set by conversation
 * events (null clears, absent keeps); deleted_at by deleted/restored;
 * message_count counts present messages; bad_lines and unknown_events count.
 *
 * Messages (keyed by id within the conversation):
 *  - created by the first `message` or `message.delta` naming an id that is
 *    not present: seq = that line's number, created_at = its ts, both fixed
 *    for the life of the message;
 *  - `message` sets role and content and every optional member present,
 *    keeps absent ones, status = complete;
 *  - `message.delta` on a new id: role (default assistant), parent_id if
 *    given, content "", thinking null, status streaming; then on any present
 *    message content += text, thinking = (thinking or "") + thinking;
 *  - `message.end` completes a present message and stores stop_reason /
 *    usage when given; `message.edited` replaces content and sets
 *    edited_at; `message.deleted` removes it (the id may be created again as
 *    a new message with a new seq).  Events naming an absent id do nothing;
 *  - every event that creates or names a present message raises its
 *    updated_at to the event's ts if later (max, so clock skew is harmless).
 */
#include "fold.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static const char *const role_names[] = {"user", "assistant", "system",
                                         "tool"};

const char *jm__role_name(int role) {
  return role >= 0 && role < 4 ? role_names[role] : "assistant";
}

int jm__role_from(const char *s, size_t n) {
  for (int i = 0; i < 4; i++)
    if (strlen(role_names[i]) == n && memcmp(role_names[i], s, n) == 0)
      return i;
  return -1;
}

int jm__fev_from_event(const jm_event *ev, uint64_t line, jm__fev *out,
                       char **tmp) {
  memset(out, 0, sizeof *out);
  *tmp = NULL;
  out->type = ev->type;
  out->ts = ev->ts;
  out->line = line;
  out->f[JM__F_ID] = ev->id;
  out->f[JM__F_ROLE] = ev->role;
  out->f[JM__F_CONTENT] = ev->content;
  out->f[JM__F_PARENT_ID] = ev->parent_id;
  out->f[JM__F_BRAIN] = ev->brain;
  out->f[JM__F_REASONING_LEVEL] = ev->reasoning_level;
  out->f[JM__F_THINKING] = ev->thinking;
  out->f[JM__F_TEXT] = ev->text;
  out->f[JM__F_TITLE] = ev->title;
  out->f[JM__F_STOP_REASON] = ev->stop_reason;
  /* meta (message / conversation events) and usage (message.end) never
   * occur in the same event, so one temporary buffer serves. */
  const jm_any *any = ev->meta.state != JM_ABSENT ? &ev->meta : &ev->usage;
  int slot = ev->meta.state != JM_ABSENT ? JM__F_META : JM__F_USAGE;
  out->f[slot].state = any->state;
  if (any->state == JM_SET) {
    *tmp = json_dumps(any->v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (*tmp == NULL)
      return -ENOMEM;
    out->f[slot].p = *tmp;
    out->f[slot].n = strlen(*tmp);
  }
  return 0;
}

/* Strings ------------------------------------------------------------------ */

static int nstr_set(jm__nstr *d, const jm_str *s) {
  free(d->p);
  d->p = NULL;
  d->n = 0;
  if (s->state != JM_SET)
    return 0; /* JM_NULL: SQL NULL */
  d->p = jm__strndup(s->p, s->n);
  if (d->p == NULL)
    return -ENOMEM;
  d->n = s->n;
  return 0;
}

/* Set when the member is present (string or null); keep when absent. */
static int nstr_member(jm__nstr *d, const jm_str *s) {
  return s->state == JM_ABSENT ? 0 : nstr_set(d, s);
}

static void nstr_free(jm__nstr *d) {
  free(d->p);
  d->p = NULL;
  d->n = 0;
}

static int buf_assign(jm__buf *b, const char *p, size_t n) {
  b->len = 0;
  if (jm__buf_append(b, p, n) != 0)
    return -ENOMEM;
  return 0;
}

static void ts_max(char dst[JM_TS_LEN + 1], const char *ts) {
  if (dst[0] == '\0' || memcmp(ts, dst, JM_TS_LEN) > 0) {
    memcpy(dst, ts, JM_TS_LEN);
    dst[JM_TS_LEN] = '\0';
  }
}

static void ts_set(char dst[JM_TS_LEN + 1], const char *ts) {
  memcpy(dst, ts, JM_TS_LEN);
  dst[JM_TS_LEN] = '\0';
}

/* The message cache ---------------------------------------------------------- */

void jm__fold_init(jm__fold *f, jm__load_fn load, void *load_ctx) {
  memset(f, 0, sizeof *f);
  f->load = load;
  f->load_ctx = load_ctx;
}

void jm__msg_clear(jm__msg *m) {
  jm__buf_release(&m->content);
  jm__buf_release(&m->thinking);
  nstr_free(&m->parent_id);
  nstr_free(&m->brain);
  nstr_free(&m->reasoning_level);
  nstr_free(&m->meta);
  nstr_free(&m->stop_reason);
  nstr_free(&m->usage);
  m->thinking_null = 1;
}

static void msg_free(jm__msg *m) {
  jm__msg_clear(m);
  free(m->id);
  free(m);
}

static void clear_cache(jm__fold *f) {
  for (size_t i = 0; i < f->nbuckets; i++) {
    jm__msg *m = f->buckets[i];
    while (m) {
      jm__msg *next = m->next;
      msg_free(m);
      m = next;
    }
    f->buckets[i] = NULL;
  }
  f->count = 0;
  f->mem = 0;
}

static void clear_bad(jm__fold *f) {
  for (size_t i = 0; i < f->nbad; i++)
    free(f->bad[i].msg);
  f->nbad = 0;
}

void jm__conv_release(jm__conv *c) {
  nstr_free(&c->title);
  nstr_free(&c->brain);
  nstr_free(&c->meta);
}

void jm__fold_release(jm__fold *f) {
  clear_cache(f);
  clear_bad(f);
  free(f->buckets);
  free(f->bad);
  jm__conv_release(&f->conv);
  memset(f, 0, sizeof *f);
}

void jm__fold_take(jm__fold *dst, jm__fold *src) {
  jm__fold_release(dst);
  *dst = *src;
  memset(src, 0, sizeof *src);
}

static uint64_t hash_id(const char *p, size_t n) {
  uint64_t h = 1469598103934665603ULL; /* FNV-1a */
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)p[i];
    h *= 1099511628211ULL;
  }
  return h;
}

static int grow(jm__fold *f) {
  size_t nb = f->nbuckets ? f->nbuckets * 2 : 64;
  jm__msg **b = calloc(nb, sizeof *b);
  if (b == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < f->nbuckets; i++) {
    jm__msg *m = f->buckets[i];
    while (m) {
      jm__msg *next = m->next;
      size_t k = hash_id(m->id, m->id_len) & (nb - 1);
      m->next = b[k];
      b[k] = m;
      m = next;
    }
  }
  free(f->buckets);
  f->buckets = b;
  f->nbuckets = nb;
  return 0;
}

/* Find the message named by id, asking the loader on a miss.  A miss the
 * loader cannot fill stays cached as "not present". */
static int lookup(jm__fold *f, const jm_str *id, jm__msg **out) {
  if (f->nbuckets) {
    size_t k = hash_id(id->p, id->n) & (f->nbuckets - 1);
    for (jm__msg *m = f->buckets[k]; m; m = m->next)
      if (m->id_len == id->n && memcmp(m->id, id->p, id->n) == 0) {
        *out = m;
        return 0;
      }
  }
  if (f->count >= f->nbuckets && grow(f) != 0)
    return -ENOMEM;
  jm__msg *m = calloc(1, sizeof *m);
  if (m == NULL || (m->id = jm__strndup(id->p, id->n)) == NULL) {
    free(m);
    return -ENOMEM;
  }
  m->id_len = id->n;
  m->thinking_null = 1;
  if (f->load != NULL) {
    int rc = f->load(f->load_ctx, m);
    if (rc < 0) {
      msg_free(m);
      return rc;
    }
    m->exists = rc == 1;
  }
  size_t k = hash_id(m->id, m->id_len) & (f->nbuckets - 1);
  m->next = f->buckets[k];
  f->buckets[k] = m;
  f->count++;
  f->mem += sizeof *m + m->id_len + m->content.cap + m->thinking.cap;
  *out = m;
  return 0;
}

/* Turn m into a new message created by this event. */
static int create(jm__fold *f, jm__msg *m, const jm__fev *ev, int role) {
  jm__msg_clear(m);
  m->exists = 1;
  m->dirty = 1;
  m->seq = (int64_t)ev->line;
  m->role = role;
  m->complete = 0;
  m->edited_at[0] = '\0';
  ts_set(m->created_at, ev->ts);
  ts_set(m->updated_at, ev->ts);
  f->conv.message_count++;
  return buf_assign(&m->content, "", 0);
}

static void touch(jm__msg *m, const char *ts) {
  ts_max(m->updated_at, ts);
  m->dirty = 1;
}

static int append_thinking(jm__msg *m, const jm_str *s) {
  if (s->state != JM_SET)
    return 0;
  if (m->thinking_null) {
    m->thinking.len = 0;
    m->thinking_null = 0;
  }
  return jm__buf_append(&m->thinking, s->p, s->n);
}

static int apply_message(jm__fold *f, jm__msg *m, const jm__fev *ev) {
  const jm_str *s = ev->f;
  int role = jm__role_from(s[JM__F_ROLE].p, s[JM__F_ROLE].n);
  if (!m->exists && create(f, m, ev, role) != 0)
    return -ENOMEM;
  m->role = role;
  m->complete = 1;
  if (buf_assign(&m->content, s[JM__F_CONTENT].p, s[JM__F_CONTENT].n) ||
      nstr_member(&m->parent_id, &s[JM__F_PARENT_ID]) ||
      nstr_member(&m->brain, &s[JM__F_BRAIN]) ||
      nstr_member(&m->reasoning_level, &s[JM__F_REASONING_LEVEL]) ||
      nstr_member(&m->meta, &s[JM__F_META]))
    return -ENOMEM;
  if (s[JM__F_THINKING].state == JM_NULL)
    m->thinking_null = 1;
  else if (s[JM__F_THINKING].state == JM_SET) {
    m->thinking_null = 0;
    if (buf_assign(&m->thinking, s[JM__F_THINKING].p, s[JM__F_THINKING].n))
      return -ENOMEM;
  }
  f->mem += s[JM__F_CONTENT].n + s[JM__F_THINKING].n;
  touch(m, ev->ts);
  return 0;
}

static int apply_delta(jm__fold *f, jm__msg *m, const jm__fev *ev) {
  const jm_str *s = ev->f;
  if (!m->exists) {
    int role = JM__ROLE_ASSISTANT;
    if (s[JM__F_ROLE].state == JM_SET)
      role = jm__role_from(s[JM__F_ROLE].p, s[JM__F_ROLE].n);
    if (create(f, m, ev, role) != 0 ||
        nstr_member(&m->parent_id, &s[JM__F_PARENT_ID]) != 0)
      return -ENOMEM;
  }
  if (s[JM__F_TEXT].state == JM_SET &&
      jm__buf_append(&m->content, s[JM__F_TEXT].p, s[JM__F_TEXT].n) != 0)
    return -ENOMEM;
  if (append_thinking(m, &s[JM__F_THINKING]) != 0)
    return -ENOMEM;
  f->mem += s[JM__F_TEXT].n + s[JM__F_THINKING].n;
  touch(m, ev->ts);
  return 0;
}

static int apply_to_message(jm__fold *f, const jm__fev *ev) {
  jm__msg *m;
  int rc = lookup(f, &ev->f[JM__F_ID], &m);
  if (rc != 0)
    return rc;
  const jm_str *s = ev->f;
  switch (ev->type) {
  case JM_EV_MESSAGE:
    return apply_message(f, m, ev);
  case JM_EV_MESSAGE_DELTA:
    return apply_delta(f, m, ev);
  default:
    break;
  }
  if (!m->exists)
    return 0; /* end / edited / deleted of an absent id: no effect */
  switch (ev->type) {
  case JM_EV_MESSAGE_END:
    m->complete = 1;
    if (nstr_member(&m->stop_reason, &s[JM__F_STOP_REASON]) ||
        nstr_member(&m->usage, &s[JM__F_USAGE]))
      return -ENOMEM;
    break;
  case JM_EV_MESSAGE_EDITED:
    if (buf_assign(&m->content, s[JM__F_CONTENT].p, s[JM__F_CONTENT].n))
      return -ENOMEM;
    ts_set(m->edited_at, ev->ts);
    f->mem += s[JM__F_CONTENT].n;
    break;
  case JM_EV_MESSAGE_DELETED:
    jm__msg_clear(m);
    m->exists = 0;
    m->dirty = 1;
    f->conv.message_count--;
    return 0;
  default:
    return 0;
  }
  touch(m, ev->ts);
  return 0;
}

int jm__fold_apply(jm__fold *f, const jm__fev *ev) {
  jm__conv *c = &f->conv;
  if (c->created_at[0] == '\0')
    ts_set(c->created_at, ev->ts);
  ts_max(c->updated_at, ev->ts);
  const jm_str *s = ev->f;
  switch (ev->type) {
  case JM_EV_UNKNOWN:
    c->unknown_events++;
    return 0;
  case JM_EV_CONVERSATION_CREATED:
  case JM_EV_CONVERSATION_UPDATED:
    if (nstr_member(&c->title, &s[JM__F_TITLE]) ||
        nstr_member(&c->brain, &s[JM__F_BRAIN]) ||
        nstr_member(&c->meta, &s[JM__F_META]))
      return -ENOMEM;
    return 0;
  case JM_EV_CONVERSATION_DELETED:
    ts_set(c->deleted_at, ev->ts);
    return 0;
  case JM_EV_CONVERSATION_RESTORED:
    c->deleted_at[0] = '\0';
    return 0;
  default:
    return apply_to_message(f, ev);
  }
}

int jm__fold_bad(jm__fold *f, uint64_t line, uint64_t offset,
                 jm_bad_reason reason, const char *msg) {
  if (f->nbad == f->capbad) {
    size_t cap = f->capbad ? f->capbad * 2 : 16;
    jm__bad_rec *b = realloc(f->bad, cap * sizeof *b);
    if (b == NULL)
      return -ENOMEM;
    f->bad = b;
    f->capbad = cap;
  }
  jm__bad_rec *b = &f->bad[f->nbad];
  b->msg = jm__strdup(msg);
  if (b->msg == NULL)
    return -ENOMEM;
  b->line = line;
  b->offset = offset;
  b->reason = reason;
  f->nbad++;
  f->conv.bad_lines++;
  f->mem += sizeof *b + strlen(msg);
  return 0;
}

int jm__fold_flush(jm__fold *f, int (*visit)(void *ctx, jm__msg *m),
                   int (*visit_bad)(void *ctx, const jm__bad_rec *b),
                   void *ctx) {
  int rc = 0;
  for (size_t i = 0; i < f->nbuckets && rc == 0; i++)
    for (jm__msg *m = f->buckets[i]; m && rc == 0; m = m->next)
      if (m->dirty)
        rc = visit(ctx, m);
  for (size_t i = 0; i < f->nbad && rc == 0; i++)
    rc = visit_bad(ctx, &f->bad[i]);
  if (rc != 0)
    return rc;
  clear_cache(f);
  clear_bad(f);
  return 0;
}
