/*
 * fold.h - the fold: events in line order -> conversation and message state.
 *
 * The fold keeps only what a batch touches: the conversation row and a
 * cache of the messages named by the events so far.  A message not in the
 * cache is asked of the loader (the mirror, inside the same transaction);
 * jm__fold_take_dirty() hands the changed messages to the writer and
 * empties the cache, so memory stays bounded however long the file is.
 * The same code folds a fresh replay (loader finds nothing), an incremental
 * ingest and a rebuild, so they cannot disagree.
 */
#ifndef JMIRROR_FOLD_H
#define JMIRROR_FOLD_H

#include "internal.h"

/* Members a fold reads, as indices into jm__fev.f[]. */
enum {
  JM__F_ID, JM__F_ROLE, JM__F_CONTENT, JM__F_PARENT_ID, JM__F_BRAIN,
  JM__F_REASONING_LEVEL, JM__F_THINKING, JM__F_TEXT, JM__F_TITLE,
  JM__F_STOP_REASON, JM__F_META, JM__F_USAGE, JM__F_COUNT
};

/* One valid event, flattened: meta and usage as compact JSON text. */
typedef struct jm__fev {
  jm_event_type type;
  const char *ts;          /* normalised, JM_TS_LEN chars */
  uint64_t line;           /* physical line number (the seq of a new message) */
  jm_str f[JM__F_COUNT];   /* borrowed strings */
} jm__fev;

/*
 * Flatten a parsed event.  meta/usage are serialised into *tmp (malloc'd,
 * caller frees with free(); NULL when there was nothing to serialise).
 */
int jm__fev_from_event(const jm_event *ev, uint64_t line, jm__fev *out,
                       char **tmp);

/* A nullable owned string: p == NULL is SQL NULL. */
typedef struct jm__nstr {
  char *p;
  size_t n;
} jm__nstr;

typedef enum { JM__ROLE_USER, JM__ROLE_ASSISTANT, JM__ROLE_SYSTEM,
               JM__ROLE_TOOL } jm__role;
const char *jm__role_name(int role);
int jm__role_from(const char *s, size_t n); /* -1 if none */

typedef struct jm__msg {
  struct jm__msg *next;   /* hash chain */
  char *id;               /* owned, NUL-terminated (may hold NUL: use id_len) */
  size_t id_len;
  int64_t rowid;          /* its row in the mirror, 0 if none */
  int exists;             /* present now (0: never existed or deleted) */
  int dirty;              /* changed since loaded */
  int64_t seq;
  int role;               /* jm__role */
  jm__buf content;        /* set whenever exists */
  jm__buf thinking;       /* valid when !thinking_null */
  int thinking_null;
  jm__nstr parent_id, brain, reasoning_level, meta, stop_reason, usage;
  int complete;           /* status: 1 complete, 0 streaming */
  char created_at[JM_TS_LEN + 1];
  char updated_at[JM_TS_LEN + 1];
  char edited_at[JM_TS_LEN + 1]; /* "" = NULL */
} jm__msg;

typedef struct jm__conv {
  jm__nstr title, brain, meta;
  char created_at[JM_TS_LEN + 1]; /* "" = NULL */
  char updated_at[JM_TS_LEN + 1];
  char deleted_at[JM_TS_LEN + 1];
  int64_t message_count, bad_lines, unknown_events;
} jm__conv;

typedef struct jm__bad_rec {
  uint64_t line, offset;
  jm_bad_reason reason;
  char *msg; /* owned */
} jm__bad_rec;

/* Loader: fill *m (id already set) from the mirror.  1 found, 0 not, <0 err */
typedef int (*jm__load_fn)(void *ctx, jm__msg *m);

typedef struct jm__fold {
  jm__conv conv;
  jm__msg **buckets;   /* hash table of touched messages */
  size_t nbuckets, count;
  size_t mem;          /* approximate bytes held by the cache */
  jm__load_fn load;    /* NULL: the mirror holds no message of this one */
  void *load_ctx;
  jm__bad_rec *bad;    /* bad lines not yet written */
  size_t nbad, capbad;
} jm__fold;

void jm__fold_init(jm__fold *f, jm__load_fn load, void *load_ctx);
void jm__fold_release(jm__fold *f);
/* Move what *src holds into *dst (whose contents are released first);
 * *src is left empty.  How a fold made on one thread changes hands. */
void jm__fold_take(jm__fold *dst, jm__fold *src);
void jm__conv_release(jm__conv *c);

/* Apply one valid event.  0, -ENOMEM, or a loader error. */
int jm__fold_apply(jm__fold *f, const jm__fev *ev);
/* Note a bad line (counted in the conversation, written at the flush). */
int jm__fold_bad(jm__fold *f, uint64_t line, uint64_t offset,
                 jm_bad_reason reason, const char *msg);

/*
 * Visit every dirty message (for writing), then empty the cache and the
 * bad-line list.  visit_bad is called for each pending bad line.  After
 * this, a later event naming a flushed message reloads it via the loader.
 */
int jm__fold_flush(jm__fold *f, int (*visit)(void *ctx, jm__msg *m),
                   int (*visit_bad)(void *ctx, const jm__bad_rec *b),
                   void *ctx);

/* Release one message's strings (for loaders that fail half-way). */
void jm__msg_clear(jm__msg *m);

#endif
