/* fuzz_safetensors.c: libFuzzer harness for the safetensors reader
 * (trainer/safetensors.c: the 8-byte length, the JSON header, every entry).
 * An accepted file must read back every tensor it accepted: F32/F16/BF16
 * through st_read_f32, I32 through st_read_i32, each into a buffer of
 * exactly the size the header declares (ASan catches one byte more). */
#include "tests/fuzz/fuzz_util.h"
#include "trainer/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_path(data, size);
    if (!path) return 0;
    char err[1024] = "";
    StFile *f = st_open(path, err, sizeof err);
    if (!f) {
        if (!err[0]) fuzz_fail("st_open", "refused without a message");
        return 0;
    }
    for (int i = 0; i < st_num_tensors(f); i++) {
        const StTensor *t = st_tensor(f, i);
        if (t->end - t->begin != t->numel * st_dtype_size(t->dtype))
            fuzz_fail("st_open", "accepted a tensor whose bytes differ from its shape");
        int f32 = t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16;
        if (!f32 && t->dtype != ST_I32) continue;
        void *dst = malloc(t->numel * 4 + !t->numel);
        if (!dst) continue;
        int bad =
            f32 ? st_read_f32(f, i, dst, err, sizeof err) : st_read_i32(f, i, dst, err, sizeof err);
        if (bad) fuzz_fail("reading an accepted tensor", err);
        free(dst);
    }
    if (st_find(f, "__metadata__") >= 0) fuzz_fail("st_open", "__metadata__ taken as a tensor");
    st_close(f);
    return 0;
}
