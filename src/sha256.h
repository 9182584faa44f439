/*
 * sha256.h - a streaming SHA-256 (internal; used by drift detection and
 * backup manifests).
 */
#ifndef JMIRROR_SHA256_H
#define JMIRROR_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct jm_sha256 {
  uint32_t h[8];          /* chaining state */
  uint64_t len;           /* bytes hashed so far */
  unsigned char buf[64];  /* partial block */
  size_t fill;            /* bytes in buf */
} jm_sha256;

void jm_sha256_init(jm_sha256 *c);
void jm_sha256_update(jm_sha256 *c, const void *data, size_t n);
void jm_sha256_final(jm_sha256 *c, unsigned char out[32]);
/* 64 lower-case hex digits + NUL */
void jm_sha256_hex(const unsigned char d[32], char out[65]);

/* Save / restore the state between blocks (only when c->fill == 0, i.e.
 * after a multiple of 64 bytes), as 64 hex digits: lets an incremental
 * backup hash only the bytes appended since the last one. */
int jm_sha256_save(const jm_sha256 *c, char out[65]);
int jm_sha256_load(jm_sha256 *c, const char *hex, uint64_t len);

#endif
