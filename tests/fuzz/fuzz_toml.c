/* fuzz_toml.c: libFuzzer harness for the config reader (trainer/config.c
 * and its TOML value grammar, trainer/toml.c). The first byte picks the
 * entry point: even, the rest is a config file (config_load_string, then
 * config_validate); odd, a --section.key=value override. A config that
 * loads and validates must print (config_to_toml) as a file that loads and
 * validates again. */
#include "tests/fuzz/fuzz_util.h"
#include "trainer/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!size) return 0;
    char *text = fuzz_text(data + 1, size - 1), err[1024] = "";
    Config c;
    config_init(&c);
    int rc = data[0] & 1 ? config_override(&c, text, err, sizeof err)
                         : config_load_string(&c, text, "fuzz.toml", err, sizeof err);
    if (!rc) rc = config_validate(&c, err, sizeof err);
    free(text);
    if (rc) {
        if (!err[0]) fuzz_fail("config", "refused without a message");
        config_free(&c);
        return 0;
    }
    char *out = config_to_toml(&c);
    if (!out) fuzz_fail("config_to_toml", "NULL");
    Config back;
    config_init(&back);
    if (config_load_string(&back, out, "resolved.toml", err, sizeof err) ||
        config_validate(&back, err, sizeof err))
        fuzz_fail("the resolved config does not load", err);
    free(out);
    config_free(&back);
    config_free(&c);
    return 0;
}
