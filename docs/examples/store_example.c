/*
 * store_example.c - the store API in one small program (docs/store.md).
 *
 *   cc store_example.c $(pkg-config --cflags --libs jmirror) -o store_example
 *   ./store_example /tmp/demo-root
 *
 * Creates a conversation, adds two messages, lists conversations, reads the
 * messages back, searches, renames, and deletes — the exercise of the
 * ConversationStore this design grew from, with the journal as the write
 * path and the mirror as the read path.  Built and run by the test suite.
 */
#include <stdio.h>
#include <stdlib.h>

#include <jmirror/jmirror.h>

/* Print the error and leave: a real application would recover instead. */
static void check(int rc, const jm_error *err, const char *what) {
  if (rc == 0)
    return;
  fprintf(stderr, "store_example: %s: %s\n", what,
          err->msg[0] ? err->msg : jm_strerror(rc));
  exit(1);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: store_example ROOT\n");
    return 2;
  }
  jm_error err;
  jm_error_clear(&err);

  jm_store_options opt;
  jm_store_options_init(&opt); /* batch durability, 5 s read-your-writes bound */
  jm_store *s;
  check(jm_store_open(&s, argv[1], &opt, &err), &err, "open");

  /* Writes: each one validated and appended to journal/<id>.jsonl. */
  char id[JM_ID_MAX + 1], mid[JM_MSG_ID_MAX + 1];
  check(jm_store_create(s, NULL, "Trip planning", "claude", NULL, id, &err),
        &err, "create");
  jm_message_in q = {.role = "user",
                     .content = "서울에서 3일 일정을 짜줘",
                     .content_len = SIZE_MAX};
  check(jm_store_add_message(s, id, &q, mid, &err), &err, "add");
  jm_message_in a = {.role = "assistant",
                     .content = "Day 1: 경복궁 and Bukchon...",
                     .content_len = SIZE_MAX,
                     .parent_id = mid};
  check(jm_store_add_message(s, id, &a, NULL, &err), &err, "add");

  /* Reads see the writes just made (read-your-writes). */
  jm_conversation_list l;
  jm_list_options lo = {.limit = 10};
  check(jm_store_list(s, &lo, &l, &err), &err, "list");
  for (size_t i = 0; i < l.n; i++)
    printf("conversation %s: %s (%lld messages)\n", l.items[i].id,
           l.items[i].title ? l.items[i].title : "(untitled)",
           (long long)l.items[i].message_count);
  jm_conversation_list_free(&l); /* the caller owns every result */

  jm_message_list ml;
  check(jm_store_messages(s, id, 0, 100, &ml, &err), &err, "messages");
  for (size_t i = 0; i < ml.n; i++)
    printf("  #%lld %s: %s\n", (long long)ml.items[i].seq, ml.items[i].role,
           ml.items[i].content);
  jm_message_list_free(&ml);

  jm_search_results r;
  jm_search_options so = {.limit = 5};
  check(jm_store_search(s, "일정", &so, &r, &err), &err, "search");
  for (size_t i = 0; i < r.n; i++)
    printf("found in %s #%lld: %s\n", r.items[i].conversation_id,
           (long long)r.items[i].seq, r.items[i].snippet);
  jm_search_results_free(&r);

  check(jm_store_rename(s, id, "Seoul, 3 days", &err), &err, "rename");
  check(jm_store_delete(s, id, &err), &err, "delete");
  check(jm_store_list(s, &lo, &l, &err), &err, "list");
  printf("after delete: %zu conversations listed\n", l.n);
  jm_conversation_list_free(&l);

  check(jm_store_close(s, &err), &err, "close");
  return 0;
}
