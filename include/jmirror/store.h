/*
 * jmirror/store.h - what an application calls: conversations and messages,
 * written to the journal, read from the mirror.  No SQL leaks out.
 *
 * Writes validate and append an event to journal/<id>.jsonl first (the
 * truth); the mirror catches up.  When jmirrord runs, a write returns once
 * the daemon has ingested it, so every process reading the mirror sees it
 * from then on; if the daemon went away meanwhile the store ingests the
 * write itself.  A write that returns JM_ETIMEDOUT has been appended to the
 * journal all the same (do not write it again): the mirror was not
 * confirmed to show it within about wait_ms + 3 s (a daemon that went away
 * adds up to another wait_ms).  Reads are
 *   - read-your-writes: a read after a write in the same process sees it,
 *     ingesting the conversation itself when no daemon runs, or waiting
 *     (bounded by wait_ms) for jmirrord to ingest it;
 *   - healed: before reading a conversation its file is compared with what
 *     the mirror recorded; a mirror behind is caught up, a mirror that
 *     drifted is replayed, and only then is the answer given.
 *
 * Ownership: every result structure is filled by the library and owned by
 * the caller, who releases it with the matching *_free function (each
 * string inside belongs to the structure).  A jm_store is not thread-safe:
 * use one per thread.
 */
#ifndef JMIRROR_STORE_H
#define JMIRROR_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "journal.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct jm_store jm_store;

typedef struct jm_store_options {
  const char *db_path; /* mirror override; NULL: $JMIRROR_MIRROR or default */
  jm_sync sync;        /* durability of writes; see jm_store_options_init */
  int wait_ms;         /* longest wait for the mirror to catch up: 5000 */
} jm_store_options;

void jm_store_options_init(jm_store_options *opt); /* batch, 5000 ms */

/* Open a store on `root`; *out is the caller's, jm_store_close() it. */
int jm_store_open(jm_store **out, const char *root,
                  const jm_store_options *opt, jm_error *err);
/* Sync pending batch writes and free.  Reports a deferred sync failure. */
int jm_store_close(jm_store *s, jm_error *err);

/* ------------------------------------------------------------------ */
/* Writes: each one event appended to the journal.                      */

/* id NULL: generate one (time-ordered, random); written to id_out
 * (JM_ID_MAX + 1 bytes) either way.  title/brain may be NULL; meta_json
 * is a JSON text or NULL.  -EEXIST if the conversation exists. */
int jm_store_create(jm_store *s, const char *id, const char *title,
                    const char *brain, const char *meta_json, char *id_out,
                    jm_error *err);

typedef struct jm_message_in {
  const char *id;        /* NULL: generate */
  const char *role;      /* user | assistant | system | tool */
  const char *content;   /* content_len bytes (may hold NUL) */
  size_t content_len;    /* SIZE_MAX: strlen(content) */
  const char *parent_id; /* NULL: absent */
  const char *brain, *reasoning_level, *thinking; /* NULL: absent */
  const char *meta_json; /* JSON text or NULL */
} jm_message_in;

/* Append a complete message; its id goes to id_out (JM_MSG_ID_MAX + 1
 * bytes).  JM_ENOTFOUND if the conversation does not exist. */
int jm_store_add_message(jm_store *s, const char *conv_id,
                         const jm_message_in *m, char *id_out, jm_error *err);

int jm_store_rename(jm_store *s, const char *conv_id, const char *title,
                    jm_error *err);
int jm_store_delete(jm_store *s, const char *conv_id, jm_error *err);
int jm_store_restore(jm_store *s, const char *conv_id, jm_error *err);

/* Append any event (a JSON object) to a conversation, creating its file. */
int jm_store_append(jm_store *s, const char *conv_id, const char *event_json,
                    jm_append_info *info, jm_error *err);

/* ------------------------------------------------------------------ */
/* Reads.                                                               */

typedef struct jm_conversation {
  char *id;
  char *title, *brain, *meta;              /* NULL when unset */
  char *created_at, *updated_at, *deleted_at; /* NULL when unset */
  int64_t message_count, bad_lines, unknown_events;
} jm_conversation;

typedef struct jm_conversation_list {
  jm_conversation *items;
  size_t n;
  char *next_cursor; /* pass to the next call; NULL: this was the last page */
} jm_conversation_list;

typedef struct jm_list_options {
  const char *brain;   /* only this brain; NULL: all */
  int include_deleted; /* also conversations with deleted_at set */
  size_t limit;        /* 0 = 50 */
  const char *cursor;  /* from the previous page; NULL: the first page */
} jm_list_options;

/* Newest first by updated_at, then id (keyset pagination: a cursor stays
 * valid while conversations are added). */
int jm_store_list(jm_store *s, const jm_list_options *opt,
                  jm_conversation_list *out, jm_error *err);
void jm_conversation_list_free(jm_conversation_list *l);

/* One conversation (healed first).  JM_ENOTFOUND if there is none. */
int jm_store_get(jm_store *s, const char *conv_id, jm_conversation *out,
                 jm_error *err);
void jm_conversation_free(jm_conversation *c);

typedef struct jm_message {
  char *id;
  int64_t seq;             /* conversation order */
  char *role;
  char *content;           /* content_len bytes + NUL */
  size_t content_len;
  char *parent_id;         /* healed: NULL, or a present message's id */
  char *parent_id_written; /* as written in the journal (may dangle) */
  char *brain, *reasoning_level, *meta;
  char *thinking;          /* NULL when none */
  size_t thinking_len;
  char *status;            /* "complete" | "streaming" */
  char *stop_reason, *usage;
  char *created_at, *updated_at, *edited_at;
} jm_message;

typedef struct jm_message_list {
  jm_message *items;
  size_t n;
  int64_t next_after; /* pass as after_seq for the next page; -1: no more */
} jm_message_list;

/* Messages in seq order after `after_seq` (0: from the start), at most
 * `limit` (0 = 100).  The conversation is healed first.  JM_ENOTFOUND if
 * there is no such conversation. */
int jm_store_messages(jm_store *s, const char *conv_id, int64_t after_seq,
                      size_t limit, jm_message_list *out, jm_error *err);
void jm_message_list_free(jm_message_list *l);

/* ------------------------------------------------------------------ */
/* Search.                                                              */

typedef struct jm_search_hit {
  char *conversation_id;
  char *message_id;
  int64_t seq;
  char *role;
  char *snippet;   /* content around the match, matches between the marks */
  char *created_at;
  double rank;     /* smaller is better (bm25); 0 for scanned matches */
} jm_search_hit;

typedef struct jm_search_results {
  jm_search_hit *items;
  size_t n;
} jm_search_results;

typedef struct jm_search_options {
  const char *conversation_id; /* only this one; NULL: all */
  size_t limit;                /* 0 = 20 */
  const char *mark_open;       /* around matches in snippets: "[" */
  const char *mark_close;      /* "]" */
  int include_deleted;         /* also in deleted conversations */
} jm_search_options;

/*
 * Substring search over message content, ranked.  The query's words
 * (split on white space) must all occur, as substrings, case-insensitively
 * for ASCII (Unicode case folding only for words of 3+ characters in rows
 * already indexed: docs/store.md).  Words of 3+ characters use the trigram
 * index; shorter words
 * are matched by scanning the candidates (or, if every word is short, the
 * messages: slower on a large mirror, still correct).  JM_ENOTFOUND if
 * conversation_id names no conversation.
 */
int jm_store_search(jm_store *s, const char *query,
                    const jm_search_options *opt, jm_search_results *out,
                    jm_error *err);
void jm_search_results_free(jm_search_results *r);

#ifdef __cplusplus
}
#endif
#endif
