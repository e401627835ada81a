/* config_keys.h: internal to config.c / config_keys.c: the key table and
 * the typing of parsed values (trainer/toml.h) into a Config. The table is
 * the single source of truth for every key's type, default, range and
 * documentation. */
#ifndef DAPT_CONFIG_KEYS_H
#define DAPT_CONFIG_KEYS_H

#include <stddef.h>

#include "trainer/config.h"
#include "trainer/toml.h"

typedef enum { K_STR, K_INT, K_INT64, K_FLOAT, K_BOOL, K_GLOBS, K_POINTS } KeyType;

typedef struct {
    const char *section, *key;
    KeyType type;
    size_t off;      /* offsetof(Config, ...); source keys: offsetof(ConfigSource, ...) */
    size_t size;     /* K_STR: buffer size */
    double lo, hi;   /* numeric range; K_STR: minimum length in lo */
    int lo_open, hi_open;
    const char *choices; /* K_STR: "a|b|c" or NULL */
    const char *def;     /* default, as TOML value text */
    const char *doc;
} KeyDef;

extern const KeyDef config_keys[];
extern const int config_num_keys;
extern const char *const config_sections[];
extern const int config_num_sections;
/* The keys of one [[data.sources]] table (section "data.sources"). */
extern const KeyDef source_keys[];
extern const int source_num_keys;

/* Stores v into key k of `base` (a Config, or a ConfigSource for
 * source_keys) after checking type, choices and range; the message says
 * what was expected ("expected an integer in [1, 1024]"). */
int key_assign(void *base, const KeyDef *k, const Value *v, char *err, size_t err_len);
/* "an integer in [1, 1024]" etc. */
void key_expectation(const KeyDef *k, char *buf, size_t n);

#endif
