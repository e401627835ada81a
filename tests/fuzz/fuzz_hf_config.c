/* fuzz_hf_config.c: libFuzzer harness for config.json (trainer/hf.c
 * hf_parse_config). An accepted config must pass model_config_check, be
 * written back by hf_config_json (never NULL, never inf/nan) and parse back
 * to the same model (model_config_same). */
#include "tests/fuzz/fuzz_util.h"
#include "trainer/hf.h"
#include "trainer/model.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = fuzz_text(data, size), err[1024] = "";
    ModelConfig c, back;
    int rc = hf_parse_config(text, "fuzz.json", &c, err, sizeof err);
    free(text);
    if (rc) {
        if (!strstr(err, "fuzz.json"))
            fuzz_fail("hf_parse_config", "a refusal without the file name");
        return 0;
    }
    if (model_config_check(&c, err, sizeof err)) fuzz_fail("accepted config fails the check", err);
    char *js = hf_config_json(&c);
    if (!js) fuzz_fail("hf_config_json", "NULL for an accepted config");
    if (hf_parse_config(js, "written.json", &back, err, sizeof err))
        fuzz_fail("written config.json refused", err);
    if (!model_config_same(&c, &back)) fuzz_fail("config.json round trip", js);
    free(js);
    return 0;
}
