/* toml.h: one TOML value (a string, integer, float, boolean or single-line
 * array, arrays nested) parsed from the text after a key's '='. The one
 * value parser of dapt: the config (trainer/config.c) and SWEEP.toml
 * (tools/law/law_sweep.c) both read their values with it. The grammar is a
 * strict subset of TOML 1.0, so what it accepts means the same to Python's
 * tomllib (docs/config.md, "Syntax: a TOML subset"). */
#ifndef DAPT_TOML_H
#define DAPT_TOML_H

#include <stddef.h>
#include <stdint.h>

typedef enum { V_STR, V_INT, V_FLOAT, V_BOOL, V_ARRAY } ValueType;

typedef struct Value {
    ValueType type;
    char *s;             /* V_STR */
    int64_t i;           /* V_INT */
    double f;            /* V_FLOAT */
    int b;               /* V_BOOL */
    struct Value *items; /* V_ARRAY, (n) */
    int n;
} Value;

/* Parses one value and what follows it on the line (spaces, an optional
 * `# comment`). 0 on success (value_free it), else nonzero with v empty and
 * a message in err (what was expected, at which column of `text`). */
int value_parse(const char *text, Value *v, char *err, size_t err_len);
void value_free(Value *v);

/* "a string", "an integer", "a float", "a boolean", "an array" */
const char *value_type_name(const Value *v);
/* *x = the value of a V_INT or V_FLOAT; nonzero for any other type. */
int value_number(const Value *v, double *x);

#endif
