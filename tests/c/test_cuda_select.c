/* test_cuda_select.c: backend selection by name. "cuda" and "cuda-fp32"
 * either both work (a CUDA build on a machine with a GPU: bf16 and fp32
 * tables with complete op sets) or both fail with a message (no CUDA in the
 * build, or no GPU); an unknown name always fails with a message. With a
 * GPU: the options a table is created with shape it (cuda.fused_norm off:
 * no fused residual + norm entries) and an out-of-range option is refused
 * with a message naming its key. Runs in every build, with or without
 * CUDA. */
#include <stdio.h>
#include <string.h>

#include "kernels/ops.h"
#include "tests/c/check.h"

/* every function pointer of the table is set */
static int complete(const Ops *o) {
    const void *const *p = (const void *const *)&o->alloc;
    const void *const *end = (const void *const *)(&o->moe_combine_bwd + 1);
    for (; p < end; p++)
        if (!*p) return 0;
    return 1;
}

int main(void) {
    char e1[256] = "", e2[256] = "", e3[256] = "";
    OpsOptions unfused = ops_options_default(), bad = ops_options_default();
    unfused.cuda.fused_norm = 0;
    bad.cuda.lmhead_chunk_rows = 0;
    /* the CPU backend ignores the options */
    const Ops *cpu = ops_get("cpu", &bad, e1, sizeof e1);
    CHECK(cpu == ops_cpu() && !strcmp(cpu->name, "cpu") && cpu->act_bytes == 4);
    const Ops *bf = ops_get("cuda", NULL, e1, sizeof e1);
    const Ops *f32 = ops_get("cuda-fp32", NULL, e2, sizeof e2);
    CHECK((bf == NULL) == (f32 == NULL));
    if (bf && f32) {
        CHECK(!strcmp(bf->name, "cuda") && bf->act_bytes == 2 && complete(bf));
        CHECK(!strcmp(f32->name, "cuda-fp32") && f32->act_bytes == 4 && complete(f32));
        CHECK(bf->residual_rmsnorm_fwd && bf->residual_layernorm_fwd);
        CHECK(ops_get("cuda", &unfused, e3, sizeof e3) == bf);
        CHECK(!bf->residual_rmsnorm_fwd && !bf->residual_layernorm_fwd);
        CHECK(ops_get("cuda", &bad, e3, sizeof e3) == NULL &&
              strstr(e3, "cuda.lmhead_chunk_rows") != NULL);
        CHECK(ops_get("cuda", NULL, e3, sizeof e3) == bf && bf->residual_rmsnorm_fwd);
    } else {
        CHECK(e1[0] != '\0' && e2[0] != '\0');
    }
    CHECK(ops_get("tpu", NULL, e3, sizeof e3) == NULL && strstr(e3, "tpu") != NULL);
    /* the backend line last: tools/gpu-check shows this log's last line */
    int rc = CHECK_DONE();
    if (bf && f32)
        printf("CUDA backend present\n");
    else
        printf("CUDA backend absent: %s\n", e1);
    return rc;
}
