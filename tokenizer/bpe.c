/* tokenizer/bpe.c: PLACEHOLDER on the tokiface branch only (refuses every
 * tokenizer.json) so that the interface links; replaced by the real
 * implementation before anything lands on main. */
#include "tokenizer/bpe.h"

#include "kernels/util.h"

const BpeFamily bpe_families[] = {{"gpt-2", NULL, 0}};
const int bpe_n_families = 1;

int bpe_load(BpeModel **out, const char *json_path, char *err, size_t errlen) {
    *out = NULL;
    return err_set(err, errlen, "%s: tokenizer.json is not implemented yet", json_path);
}
void bpe_free(BpeModel *m) { (void)m; }
uint32_t bpe_vocab_size(const BpeModel *m) { (void)m; return 0; }
int bpe_encode(const BpeModel *m, const char *text, size_t n, uint32_t **ids, size_t *n_ids,
               size_t *cap, char *err, size_t errlen) {
    (void)m, (void)text, (void)n, (void)ids, (void)n_ids, (void)cap;
    return err_set(err, errlen, "not implemented");
}
int bpe_decode(const BpeModel *m, const uint32_t *ids, size_t n, int skip_special,
               char **text_out, size_t *len_out, char *err, size_t errlen) {
    (void)m, (void)ids, (void)n, (void)skip_special, (void)text_out, (void)len_out;
    return err_set(err, errlen, "not implemented");
}
const char *bpe_token(const BpeModel *m, uint32_t id) { (void)m, (void)id; return NULL; }
int bpe_token_id(const BpeModel *m, const char *s, size_t n) { (void)m, (void)s, (void)n; return -1; }
int bpe_token_type(const BpeModel *m, uint32_t id) { (void)m, (void)id; return BPE_TOKEN_UNUSED; }
size_t bpe_n_merges(const BpeModel *m) { (void)m; return 0; }
void bpe_merge(const BpeModel *m, size_t i, const char **l, const char **r) {
    (void)m, (void)i;
    *l = *r = NULL;
}
int bpe_template_bos(const BpeModel *m) { (void)m; return -1; }
const BpeFamily *bpe_family(const BpeModel *m) { (void)m; return NULL; }
