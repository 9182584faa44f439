/*
 * event.c - is this line a valid event, and if so, which?
 *
 * A line's content (no LF, no trailing CR) is checked in the format's
 * order; the first fault wins:
 *
 *   too_long            more content bytes than the maximum (64 MiB)
 *   invalid_utf8        not strict UTF-8 (checked here, before jansson)
 *   invalid_json        not RFC 8259 JSON, or one of the cases the format
 *                       decides: lone surrogate escape, BOM, NaN/Infinity,
 *                       integer outside int64, double overflow (1e400),
 *                       nesting deeper than 100, trailing bytes
 *   not_object          valid JSON but not an object
 *   duplicate_key       a key repeated (after unescaping) in any object
 *   unsupported_version "v" > 1
 *   conversation_mismatch  "conversation_id" names another file
 *   missing_member      "type", "ts" or a required member of a known type
 *   bad_ts              "ts" present but not a UTC RFC 3339 string
 *   wrong_type          any present member of the wrong type, outside its
 *                       enum or its length limits
 *
 * jansson does the JSON work.  Its duplicate-key rejection stops at the
 * first duplicate, which would hide a syntax error later in the line, so a
 * line it rejects for a duplicate is parsed once more without that check to
 * rank the faults correctly (rare, so the common path parses once).  Its
 * depth limit is 2048, so depth is measured here: only when the line holds
 * more than 100 '[' or '{' bytes can it be too deep, so most lines skip it.
 *
 * Member checks never stop at the first fault: each fault is noted with its
 * category and the lowest category wins, so the answer does not depend on
 * the order members appear in.
 *
 * A message quotes a member's value through shown(): the value is decoded
 * JSON, so it may hold "\n", "\u001b" or "\u0000", and the message must stay
 * one line of text (it becomes a jm_error message) that a NUL cannot cut.
 */
#include "internal.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

typedef struct fault {
  jm_bad *bad;     /* where the winning fault is written */
  const char *ctx; /* "message", "message.delta", or "event" */
} fault;

static void note(fault *f, jm_bad_reason reason, const char *fmt, ...)
    JM__PRINTF(3, 4);

static void note(fault *f, jm_bad_reason reason, const char *fmt, ...) {
  if (f->bad->reason != JM_BAD_NONE && f->bad->reason <= reason)
    return; /* an earlier category already won */
  f->bad->reason = reason;
  int n = snprintf(f->bad->msg, sizeof f->bad->msg, "%s: ", f->ctx);
  if (n < 0 || (size_t)n >= sizeof f->bad->msg)
    return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->bad->msg + n, sizeof f->bad->msg - (size_t)n, fmt, ap);
  va_end(ap);
}

static void set_bad(jm_bad *bad, jm_bad_reason reason, const char *fmt, ...)
    JM__PRINTF(3, 4);

static void set_bad(jm_bad *bad, jm_bad_reason reason, const char *fmt,
                    ...) {
  bad->reason = reason;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(bad->msg, sizeof bad->msg, fmt, ap);
  va_end(ap);
}

/* At most ~64 chars of a value: printable ASCII as is, any other byte as
 * \xNN (as id.c shows ids), "..." when cut. */
static const char *shown(char out[72], const char *s, size_t n) {
  size_t o = 0, i = 0;
  for (; i < n && o + 4 < 64; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x7f && c != '\'')
      out[o++] = (char)c;
    else
      o += (size_t)snprintf(out + o, 72 - o, "\\x%02x", c);
  }
  memcpy(out + o, i < n ? "..." : "", i < n ? 4 : 1);
  return out;
}

/* jansson's error text quotes the input near the fault ("invalid token
 * near '...'"), raw: a form feed, an ESC or a C1 control from a journal
 * line would reach stderr, the mirror's bad_lines and `jmirror errors`.
 * Keep printable ASCII, show every other byte as \xNN. */
static const char *clean_text(char out[JSON_ERROR_TEXT_LENGTH * 4],
                              const char *s) {
  size_t o = 0;
  for (; *s != '\0' && o + 5 < JSON_ERROR_TEXT_LENGTH * 4; s++) {
    unsigned char c = (unsigned char)*s;
    if (c >= 0x20 && c < 0x7f)
      out[o++] = (char)c;
    else
      o += (size_t)snprintf(out + o, JSON_ERROR_TEXT_LENGTH * 4 - o,
                            "\\x%02x", c);
  }
  out[o] = '\0';
  return out;
}

const char *jm_bad_reason_name(jm_bad_reason reason) {
  static const char *const names[] = {
    "none", "too_long", "invalid_utf8", "invalid_json", "not_object",
    "duplicate_key", "unsupported_version", "conversation_mismatch",
    "missing_member", "bad_ts", "wrong_type",
  };
  if ((size_t)reason < JM__ARRAY_LEN(names))
    return names[reason];
  return "unknown";
}

static const char *const type_names[] = {
  NULL, "conversation.created", "conversation.updated",
  "conversation.deleted", "conversation.restored", "message",
  "message.delta", "message.end", "message.edited", "message.deleted",
};

const char *jm_event_type_name(jm_event_type type) {
  if ((size_t)type < JM__ARRAY_LEN(type_names))
    return type_names[type];
  return NULL;
}

static jm_event_type type_from(const char *s, size_t n) {
  for (size_t i = 1; i < JM__ARRAY_LEN(type_names); i++)
    if (strlen(type_names[i]) == n && memcmp(type_names[i], s, n) == 0)
      return (jm_event_type)i;
  return JM_EV_UNKNOWN;
}

static const char *json_kind(const json_t *v) {
  switch (json_typeof(v)) {
  case JSON_OBJECT: return "object";
  case JSON_ARRAY: return "array";
  case JSON_STRING: return "string";
  case JSON_INTEGER: return "integer";
  case JSON_REAL: return "number";
  case JSON_TRUE:
  case JSON_FALSE: return "boolean";
  case JSON_NULL: return "null";
  }
  return "value";
}

static int too_deep(const json_t *v, int depth) {
  if (!json_is_object(v) && !json_is_array(v))
    return 0;
  if (depth > JM_MAX_DEPTH)
    return 1;
  if (json_is_array(v)) {
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) if (too_deep(e, depth + 1)) return 1;
    return 0;
  }
  const char *k;
  json_t *e;
  json_object_foreach((json_t *)v, k, e) if (too_deep(e, depth + 1)) return 1;
  return 0;
}

/* Parse with jansson and rank JSON-level faults.  Returns the root or NULL
 * with *bad set (or *oom set).
 *
 * jansson rejects every malformed UTF-8 sequence (overlongs, surrogates,
 * beyond U+10FFFF, stray bytes), so a line it accepts is valid UTF-8 and
 * the byte-level check only runs on lines it refuses, to rank
 * invalid_utf8 before invalid_json: one pass over the bytes saved on every
 * good line. */
static json_t *parse_json(const char *line, size_t len, jm_bad *bad,
                          int *oom) {
  const size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL;
  json_error_t e, dup_e;
  char text[JSON_ERROR_TEXT_LENGTH * 4];
  json_t *root = json_loadb(line, len, flags | JSON_REJECT_DUPLICATES, &e);
  int dup = 0;
  if (root == NULL && json_error_code(&e) == json_error_out_of_memory) {
    *oom = 1;
    return NULL;
  }
  size_t at = 0;
  if (root == NULL && !jm__utf8_valid(line, len, &at)) {
    set_bad(bad, JM_BAD_INVALID_UTF8, "invalid UTF-8 at byte %zu", at);
    return NULL;
  }
  if (root == NULL && json_error_code(&e) == json_error_duplicate_key) {
    dup = 1; /* rank it: a later syntax error outranks the duplicate */
    dup_e = e;
    root = json_loadb(line, len, flags, &e);
  }
  if (root == NULL) {
    if (json_error_code(&e) == json_error_out_of_memory) {
      *oom = 1;
      return NULL;
    }
    if (json_error_code(&e) == json_error_null_byte_in_key)
      set_bad(bad, JM_BAD_INVALID_JSON,
              "invalid JSON at byte %d: \\u0000 in an object key is not "
              "supported",
              e.position);
    else
      set_bad(bad, JM_BAD_INVALID_JSON, "invalid JSON at byte %d: %s",
              e.position, clean_text(text, e.text));
    return NULL;
  }
  /* Depth: a walk of the parsed tree (an event has a dozen nodes). */
  if (too_deep(root, 1)) {
    set_bad(bad, JM_BAD_INVALID_JSON,
            "invalid JSON: nested deeper than %d arrays/objects",
            JM_MAX_DEPTH);
    goto fail;
  }
  if (!json_is_object(root)) {
    set_bad(bad, JM_BAD_NOT_OBJECT, "not a JSON object but %s",
            json_kind(root));
    goto fail;
  }
  if (dup) {
    set_bad(bad, JM_BAD_DUPLICATE_KEY, "%s at byte %d",
            clean_text(text, dup_e.text), dup_e.position);
    goto fail;
  }
  return root;
fail:
  json_decref(root);
  return NULL;
}

/* A member that must be a string when present (null allowed if nullable). */
static void get_str(fault *f, json_t *obj, const char *key, int required,
                    int nullable, jm_str *out) {
  json_t *v = json_object_get(obj, key);
  out->p = NULL;
  out->n = 0;
  out->state = JM_ABSENT;
  if (v == NULL) {
    if (required)
      note(f, JM_BAD_MISSING_MEMBER, "missing required member '%s'", key);
    return;
  }
  if (json_is_null(v) && nullable && !required) {
    out->state = JM_NULL;
    return;
  }
  if (!json_is_string(v)) {
    note(f, JM_BAD_WRONG_TYPE, "member '%s' must be a string%s, not %s", key,
         (nullable && !required) ? " or null" : "", json_kind(v));
    return;
  }
  out->p = json_string_value(v);
  out->n = json_string_length(v);
  out->state = JM_SET;
}

static void check_msg_id(fault *f, jm_str *id) {
  if (id->state != JM_SET)
    return;
  if (id->n < 1 || id->n > JM_MSG_ID_MAX)
    note(f, JM_BAD_WRONG_TYPE, "member 'id' must be 1 to %d bytes (got %zu)",
         JM_MSG_ID_MAX, id->n);
  else if (memchr(id->p, '\0', id->n) != NULL)
    note(f, JM_BAD_WRONG_TYPE, "member 'id' must not contain NUL");
}

static void check_role(fault *f, jm_str *role) {
  static const char *const roles[] = {"user", "assistant", "system", "tool"};
  char buf[72];
  if (role->state != JM_SET)
    return;
  for (size_t i = 0; i < JM__ARRAY_LEN(roles); i++)
    if (strlen(roles[i]) == role->n && memcmp(roles[i], role->p, role->n) == 0)
      return;
  note(f, JM_BAD_WRONG_TYPE,
       "member 'role' must be one of user, assistant, system, tool (got "
       "'%s')",
       shown(buf, role->p, role->n));
}

static void get_any(json_t *obj, const char *key, jm_any *out) {
  json_t *v = json_object_get(obj, key);
  out->v = NULL;
  out->state = JM_ABSENT;
  if (v == NULL)
    return;
  if (json_is_null(v)) {
    out->state = JM_NULL;
    return;
  }
  out->v = v;
  out->state = JM_SET;
}

static void check_common(fault *f, json_t *obj, const char *conv_id,
                         jm_event *ev) {
  char buf[72];
  json_t *v = json_object_get(obj, "v");
  if (v != NULL && !json_is_null(v)) {
    if (!json_is_integer(v))
      note(f, JM_BAD_WRONG_TYPE, "member 'v' must be an integer, not %s",
           json_kind(v));
    else if (json_integer_value(v) > JM_FORMAT_VERSION)
      note(f, JM_BAD_UNSUPPORTED_VERSION,
           "format version %lld is not supported (this program reads "
           "version %d)",
           (long long)json_integer_value(v), JM_FORMAT_VERSION);
    else if (json_integer_value(v) < 1)
      note(f, JM_BAD_WRONG_TYPE, "member 'v' must be 1 or more (got %lld)",
           (long long)json_integer_value(v));
  }
  jm_str cid;
  get_str(f, obj, "conversation_id", 0, 1, &cid);
  if (cid.state == JM_SET && conv_id != NULL &&
      (cid.n != strlen(conv_id) || memcmp(cid.p, conv_id, cid.n) != 0))
    note(f, JM_BAD_CONVERSATION_MISMATCH,
         "conversation_id '%s' does not match the file's id '%s'",
         shown(buf, cid.p, cid.n), conv_id);

  v = json_object_get(obj, "ts");
  if (v == NULL)
    note(f, JM_BAD_MISSING_MEMBER, "missing required member 'ts'");
  else if (!json_is_string(v))
    note(f, JM_BAD_BAD_TS, "member 'ts' must be a string, not %s",
         json_kind(v));
  else if (jm_ts_normalise(json_string_value(v), json_string_length(v),
                           ev->ts) != 0)
    note(f, JM_BAD_BAD_TS,
         "member 'ts' is not a UTC RFC 3339 time "
         "(YYYY-MM-DDTHH:MM:SS[.f]Z): '%s'",
         shown(buf, json_string_value(v), json_string_length(v)));
}

static void check_members(fault *f, json_t *obj, jm_event *ev) {
  switch (ev->type) {
  case JM_EV_CONVERSATION_CREATED:
  case JM_EV_CONVERSATION_UPDATED:
    get_str(f, obj, "title", 0, 1, &ev->title);
    get_str(f, obj, "brain", 0, 1, &ev->brain);
    get_any(obj, "meta", &ev->meta);
    break;
  case JM_EV_CONVERSATION_DELETED:
  case JM_EV_CONVERSATION_RESTORED:
  case JM_EV_UNKNOWN:
    break;
  case JM_EV_MESSAGE:
    get_str(f, obj, "id", 1, 0, &ev->id);
    get_str(f, obj, "role", 1, 0, &ev->role);
    get_str(f, obj, "content", 1, 0, &ev->content);
    get_str(f, obj, "parent_id", 0, 1, &ev->parent_id);
    get_str(f, obj, "brain", 0, 1, &ev->brain);
    get_str(f, obj, "reasoning_level", 0, 1, &ev->reasoning_level);
    get_str(f, obj, "thinking", 0, 1, &ev->thinking);
    get_any(obj, "meta", &ev->meta);
    break;
  case JM_EV_MESSAGE_DELTA:
    get_str(f, obj, "id", 1, 0, &ev->id);
    get_str(f, obj, "role", 0, 1, &ev->role);
    get_str(f, obj, "parent_id", 0, 1, &ev->parent_id);
    get_str(f, obj, "text", 0, 1, &ev->text);
    get_str(f, obj, "thinking", 0, 1, &ev->thinking);
    break;
  case JM_EV_MESSAGE_END: {
    get_str(f, obj, "id", 1, 0, &ev->id);
    get_str(f, obj, "stop_reason", 0, 1, &ev->stop_reason);
    get_any(obj, "usage", &ev->usage);
    if (ev->usage.state == JM_SET && !json_is_object(ev->usage.v))
      note(f, JM_BAD_WRONG_TYPE,
           "member 'usage' must be an object or null, not %s",
           json_kind(ev->usage.v));
    break;
  }
  case JM_EV_MESSAGE_EDITED:
    get_str(f, obj, "id", 1, 0, &ev->id);
    get_str(f, obj, "content", 1, 0, &ev->content);
    break;
  case JM_EV_MESSAGE_DELETED:
    get_str(f, obj, "id", 1, 0, &ev->id);
    break;
  }
  check_msg_id(f, &ev->id);
  check_role(f, &ev->role);
}

json_t *jm__event_load(const char *line, size_t len, size_t max_line,
                       jm_bad *bad, int *oom) {
  bad->reason = JM_BAD_NONE;
  bad->msg[0] = '\0';
  *oom = 0;
  if (max_line == 0)
    max_line = JM_MAX_LINE_DEFAULT;
  if (len > max_line) {
    set_bad(bad, JM_BAD_TOO_LONG, "line of %zu bytes exceeds the maximum of %zu",
            len, max_line);
    return NULL;
  }
  return parse_json(line, len, bad, oom);
}

int jm__event_validate(json_t *root, const char *conv_id, jm_event *ev,
                       jm_bad *bad) {
  memset(ev, 0, sizeof *ev);
  bad->reason = JM_BAD_NONE;
  bad->msg[0] = '\0';
  fault f = {bad, "event"};
  json_t *type = json_object_get(root, "type");
  if (type == NULL)
    note(&f, JM_BAD_MISSING_MEMBER, "missing required member 'type'");
  else if (!json_is_string(type))
    note(&f, JM_BAD_WRONG_TYPE, "member 'type' must be a string, not %s",
         json_kind(type));
  else {
    ev->type_name.p = json_string_value(type);
    ev->type_name.n = json_string_length(type);
    ev->type_name.state = JM_SET;
    ev->type = type_from(ev->type_name.p, ev->type_name.n);
    if (ev->type != JM_EV_UNKNOWN)
      f.ctx = type_names[ev->type];
  }
  check_common(&f, root, conv_id, ev);
  check_members(&f, root, ev);
  if (bad->reason != JM_BAD_NONE) {
    memset(ev, 0, sizeof *ev);
    return JM_EVENT_BAD;
  }
  ev->root = root;
  return JM_EVENT_OK;
}

int jm_event_parse(const char *line, size_t len, const char *conv_id,
                   size_t max_line, jm_event *ev, jm_bad *bad) {
  memset(ev, 0, sizeof *ev);
  int oom;
  json_t *root = jm__event_load(line, len, max_line, bad, &oom);
  if (root == NULL)
    return oom ? -ENOMEM : JM_EVENT_BAD;
  int rc = jm__event_validate(root, conv_id, ev, bad);
  if (rc != JM_EVENT_OK)
    json_decref(root); /* on success ev->root owns it */
  return rc;
}

void jm_event_release(jm_event *ev) {
  if (ev == NULL)
    return;
  json_decref(ev->root);
  memset(ev, 0, sizeof *ev);
}
