/* test_bpe: tokenizer.json byte-level BPE (tokenizer/bpe.h) on hand-made
 * files, without Python (tests/tok/test_bpe_hf.py compares with HF
 * tokenizers itself). Checks:
 *   - known answers: merges applied lowest rank first, an added token in
 *     the raw text, ignore_merges, unk_token and fuse_unk, decode (with the
 *     U+FFFD of a cut character, skip_special), the family found;
 *   - refusals, each naming its JSON key: model types other than BPE,
 *     pre-tokenizers, normalizers, decoders and post-processors dapt does
 *     not implement, dropout, byte_fallback, subword prefixes, bad or
 *     duplicated ids and tokens, merges of unknown tokens, an added token
 *     whose id HF would not give it, regexes PCRE2 cannot compile, JSON cut
 *     at every 97th byte; invalid UTF-8 to encode (with the byte offset), a
 *     byte without a token, an id without a token to decode;
 *   - 4 threads encoding at once on one model give the 1-thread ids;
 *   - tok_run (`dapt tokenize`) with a tokenizer.json of more than 65536
 *     ids: 4-byte tokens, the vocabulary size, EOS and tokenizer_hash in the
 *     shard header, and each document stored as tokenizer_encode_doc makes
 *     it. */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "data/shard.h"
#include "tests/c/check.h"
#include "tests/data/scratch.h"
#include "tokenizer/bpe.h"
#include "tokenizer/tokenize.h"
#include "tokenizer/tokenizer.h"

static char err[2048];

/* The byte-level spelling of byte b (GPT-2's bytes_to_unicode) in UTF-8. */
static void byte_spelling(int b, char out[4]) {
    unsigned cp = b <= 0x20                  ? 0x100u + (unsigned)b
                  : (b >= 0x7f && b <= 0xa0) ? 0x121u + (unsigned)(b - 0x7f)
                  : b == 0xad                ? 0x143u
                                             : (unsigned)b;
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

/* Token ids of the base file: bytes 0..255, then these merges' results. */
enum { T_G_T = 256, T_HE, T_G_THE, T_IN, T_ABC, T_EOS };

/* A GPT-2-style tokenizer.json: the 256 byte tokens (id = byte), merges
 * "Ġ t", "h e", "Ġt he", "i n", a token "abc" without merges, and
 * <|endoftext|> (special). */
static cJSON *base(void) {
    cJSON *root = cJSON_CreateObject(), *model = cJSON_CreateObject(),
          *vocab = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    for (int b = 0; b < 256; b++) {
        char s[4];
        byte_spelling(b, s);
        cJSON_AddNumberToObject(vocab, s, b);
    }
    const char *more[] = {"Ġt", "he", "Ġthe", "in", "abc"};
    for (int i = 0; i < 5; i++)
        cJSON_AddNumberToObject(vocab, more[i], T_G_T + i);
    const char *merges[] = {"Ġ t", "h e", "Ġt he", "i n"};
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddFalseToObject(model, "ignore_merges");
    cJSON_AddItemToObject(model, "vocab", vocab);
    cJSON_AddItemToObject(model, "merges", cJSON_CreateStringArray(merges, 4));
    cJSON_AddItemToObject(root, "model", model);
    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens"), *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "id", T_EOS);
    cJSON_AddStringToObject(t, "content", "<|endoftext|>");
    cJSON_AddFalseToObject(t, "single_word");
    cJSON_AddFalseToObject(t, "lstrip");
    cJSON_AddFalseToObject(t, "rstrip");
    cJSON_AddFalseToObject(t, "normalized");
    cJSON_AddTrueToObject(t, "special");
    cJSON_AddItemToArray(added, t);
    cJSON_AddNullToObject(root, "normalizer");
    cJSON *pre = cJSON_AddObjectToObject(root, "pre_tokenizer");
    cJSON_AddStringToObject(pre, "type", "ByteLevel");
    cJSON_AddFalseToObject(pre, "add_prefix_space");
    cJSON_AddTrueToObject(pre, "use_regex");
    cJSON_AddNullToObject(root, "post_processor");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(root, "decoder"), "type", "ByteLevel");
    return root;
}

static cJSON *at(cJSON *j, const char *a, const char *b) {
    cJSON *x = cJSON_GetObjectItem(j, a);
    return b ? cJSON_GetObjectItem(x, b) : x;
}

static BpeModel *parse(cJSON *j) {
    char *s = cJSON_PrintUnformatted(j);
    BpeModel *m = NULL;
    err[0] = 0;
    if (bpe_parse(&m, s, strlen(s), "t.json", err, sizeof err)) m = NULL;
    free(s);
    cJSON_Delete(j);
    return m;
}

/* Encodes text and compares with want[0..n) (n = -1: expects a failure
 * whose message contains `msg`). */
static void encodes(const BpeModel *m, const char *text, size_t len, const uint32_t *want, int n,
                    const char *msg) {
    uint32_t *ids = NULL;
    size_t n_ids = 0, cap = 0;
    err[0] = 0;
    int rc = bpe_encode(m, text, len, &ids, &n_ids, &cap, err, sizeof err);
    if (n < 0) {
        CHECK(rc != 0, "\"%s\" encoded", text);
        CHECK_MSG(err, msg);
    } else {
        int same =
            rc == 0 && n_ids == (size_t)n && (n == 0 || !memcmp(ids, want, n_ids * sizeof *ids));
        CHECK(same, "\"%s\": %zu ids (%u %u ...), expected %d (%s)", text, n_ids,
              n_ids ? ids[0] : 0, n_ids > 1 ? ids[1] : 0, n, err);
    }
    free(ids);
}

static void decodes(const BpeModel *m, const uint32_t *ids, size_t n, int skip, const char *want) {
    char *text = NULL;
    size_t len = 0;
    int rc = bpe_decode(m, ids, n, skip, &text, &len, err, sizeof err);
    if (!want) {
        CHECK(rc != 0);
        return;
    }
    CHECK(rc == 0 && len == strlen(want) && !memcmp(text, want, len),
          "decoded \"%s\", expected \"%s\" (%s)", text ? text : "", want, rc ? err : "");
    free(text);
}

static void known_answers(void) {
    BpeModel *m = parse(base());
    CHECK(m != NULL, "%s", err);
    if (!m) return;
    CHECK(bpe_vocab_size(m) == T_EOS + 1);
    CHECK(bpe_family(m) && !strcmp(bpe_family(m)->gguf_pre, "gpt-2"));
    CHECK(bpe_template_bos(m) == -1);
    CHECK(bpe_n_merges(m) == 4);
    const char *l, *r;
    bpe_merge(m, 2, &l, &r);
    CHECK(!strcmp(l, "Ġt") && !strcmp(r, "he"));
    CHECK(bpe_token_id(m, "<|endoftext|>", 13) == T_EOS &&
          bpe_token_type(m, T_EOS) == BPE_TOKEN_SPECIAL);
    CHECK(bpe_token_type(m, 'a') == BPE_TOKEN_NORMAL && !strcmp(bpe_token(m, ' '), "Ġ"));
    /* " the" merges to Ġthe in rank order; " then": Ġthe + n */
    encodes(m, " the then", 9, (uint32_t[]){T_G_THE, T_G_THE, 'n'}, 3, NULL);
    /* "the" (no space): h e merge, t stays */
    encodes(m, "the", 3, (uint32_t[]){'t', T_HE}, 2, NULL);
    encodes(m, "in<|endoftext|>in", 17, (uint32_t[]){T_IN, T_EOS, T_IN}, 3, NULL);
    encodes(m, "<|endoftext|", 12,
            (uint32_t[]){'<', '|', 'e', 'n', 'd', 'o', 'f', 't', 'e', 'x', 't', '|'}, 12, NULL);
    encodes(m, "abc", 3, (uint32_t[]){'a', 'b', 'c'}, 3, NULL); /* no merge makes abc */
    encodes(m, "", 0, NULL, 0, NULL);
    encodes(m, "ab\xff", 3, NULL, -1, "byte offset 2 of the text: invalid UTF-8");
    encodes(m, "\xc3\xa9\xed\xa0\x80", 5, NULL, -1, "byte offset 2 ");
    decodes(m, (uint32_t[]){T_G_THE, 'n'}, 2, 0, " then");
    decodes(m, (uint32_t[]){0xc3, 0xa9}, 2, 0, "\xc3\xa9"); /* é from its two bytes */
    decodes(m, (uint32_t[]){0xc3, 'A'}, 2, 0,
            "\xef\xbf\xbd"
            "A");                                               /* a cut character: U+FFFD */
    decodes(m, (uint32_t[]){0xe2, 0x82}, 2, 0, "\xef\xbf\xbd"); /* one U+FFFD for the prefix */
    decodes(m, (uint32_t[]){T_IN, T_EOS}, 2, 0, "in<|endoftext|>");
    decodes(m, (uint32_t[]){T_IN, T_EOS}, 2, 1, "in");
    decodes(m, (uint32_t[]){T_EOS + 1}, 1, 0, NULL);
    CHECK_MSG(err, "id 262 (position 0) is not a token");
    bpe_free(m);

    /* ignore_merges: a pre-token that is a token is emitted whole */
    cJSON *j = base();
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(j, "model"), "ignore_merges", cJSON_CreateTrue());
    m = parse(j);
    CHECK(m != NULL, "%s", err);
    if (m) encodes(m, "abc the", 7, (uint32_t[]){T_ABC, T_G_THE}, 2, NULL);
    bpe_free(m);

    /* a byte without a token: refused, or unk_token (fused with fuse_unk) */
    j = base();
    cJSON_DeleteItemFromObjectCaseSensitive(at(j, "model", "vocab"), "z");
    cJSON_AddNumberToObject(at(j, "model", "vocab"), "zq", 'z'); /* the same number of tokens */
    m = parse(j);
    CHECK(m != NULL, "%s", err);
    if (m) encodes(m, "zz", 2, NULL, -1, "byte 0x7a has no token in model.vocab");
    bpe_free(m);
    for (int fuse = 0; fuse < 2; fuse++) {
        j = base();
        cJSON *model = cJSON_GetObjectItem(j, "model");
        cJSON_DeleteItemFromObjectCaseSensitive(cJSON_GetObjectItem(model, "vocab"), "z");
        cJSON_AddNumberToObject(cJSON_GetObjectItem(model, "vocab"), "zq", 'z');
        cJSON_ReplaceItemInObject(model, "unk_token", cJSON_CreateString("<"));
        cJSON_AddBoolToObject(model, "fuse_unk", fuse);
        m = parse(j);
        CHECK(m != NULL, "%s", err);
        if (m && !fuse) encodes(m, "azzb", 4, (uint32_t[]){'a', '<', '<', 'b'}, 4, NULL);
        if (m && fuse) encodes(m, "azzb", 4, (uint32_t[]){'a', '<', 'b'}, 3, NULL);
        bpe_free(m);
    }
}

/* ------------------------------------------------------------- refusals */

static void set(cJSON *obj, const char *key, cJSON *v) {
    if (cJSON_GetObjectItem(obj, key))
        cJSON_ReplaceItemInObject(obj, key, v);
    else
        cJSON_AddItemToObject(obj, key, v);
}

static cJSON *typed(const char *type) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    return o;
}

/* Llama 3's pre-tokenizer with one Split field replaced. */
static cJSON *sequence_pre(const char *key, cJSON *value) {
    cJSON *seq = typed("Sequence"), *list = cJSON_AddArrayToObject(seq, "pretokenizers");
    cJSON *split = typed("Split"), *pat = cJSON_AddObjectToObject(split, "pattern");
    cJSON_AddStringToObject(pat, "Regex", bpe_families[1].pattern);
    cJSON_AddStringToObject(split, "behavior", "Isolated");
    cJSON_AddFalseToObject(split, "invert");
    if (key) set(split, key, value);
    cJSON *bl = typed("ByteLevel");
    cJSON_AddFalseToObject(bl, "add_prefix_space");
    cJSON_AddFalseToObject(bl, "use_regex");
    cJSON_AddItemToArray(list, split);
    cJSON_AddItemToArray(list, bl);
    return seq;
}

static void refuses(cJSON *j, const char *what, const char *msg) {
    BpeModel *m = parse(j);
    CHECK(m == NULL, "accepted: %s", what);
    bpe_free(m);
    CHECK_MSG(err, "t.json: ");
    CHECK_MSG(err, msg);
}

static void refusals(void) {
    cJSON *j;
    const char *types[] = {"WordPiece", "Unigram", "WordLevel"};
    for (int i = 0; i < 3; i++) {
        set(at(j = base(), "model", NULL), "type", cJSON_CreateString(types[i]));
        char want[64];
        snprintf(want, sizeof want, "model.type is \"%s\"", types[i]);
        refuses(j, types[i], want);
    }
    set(j = base(), "pre_tokenizer", typed("Metaspace"));
    refuses(j, "Metaspace", "pre_tokenizer.type is \"Metaspace\"");
    set(j = base(), "pre_tokenizer", cJSON_CreateNull());
    refuses(j, "no pre-tokenizer", "pre_tokenizer is null");
    set(j = base(), "pre_tokenizer", sequence_pre("behavior", cJSON_CreateString("Removed")));
    refuses(j, "Removed", "pre_tokenizer.pretokenizers[0].behavior is \"Removed\"");
    set(j = base(), "pre_tokenizer", sequence_pre("invert", cJSON_CreateTrue()));
    refuses(j, "invert", "pre_tokenizer.pretokenizers[0].invert is true");
    cJSON *str = cJSON_CreateObject();
    cJSON_AddStringToObject(str, "String", " ");
    set(j = base(), "pre_tokenizer", sequence_pre("pattern", str));
    refuses(j, "String pattern", "pretokenizers[0].pattern: only {\"Regex\": ...}");
    cJSON *bad_re = cJSON_CreateObject();
    cJSON_AddStringToObject(bad_re, "Regex", "(unclosed");
    set(j = base(), "pre_tokenizer", sequence_pre("pattern", bad_re));
    refuses(j, "bad regex", "pretokenizers[0]: the regex does not compile in PCRE2");
    set(j = base(), "pre_tokenizer", sequence_pre(NULL, NULL));
    cJSON_InsertItemInArray(cJSON_GetObjectItem(at(j, "pre_tokenizer", NULL), "pretokenizers"), 0,
                            typed("Digits"));
    refuses(j, "Digits", "pretokenizers[0].type is \"Digits\"");
    set(j = base(), "pre_tokenizer", sequence_pre(NULL, NULL));
    cJSON_ReplaceItemInArray(cJSON_GetObjectItem(at(j, "pre_tokenizer", NULL), "pretokenizers"), 0,
                             sequence_pre(NULL, NULL));
    refuses(j, "Sequence in Sequence", "pretokenizers[0].type is \"Sequence\"");
    set(j = base(), "pre_tokenizer", sequence_pre(NULL, NULL));
    cJSON_AddItemToArray(cJSON_GetObjectItem(at(j, "pre_tokenizer", NULL), "pretokenizers"),
                         typed("ByteLevel"));
    refuses(j, "two ByteLevel", "pretokenizers[1]: the Sequence must end with its only ByteLevel");
    set(j = base(), "normalizer", typed("NFKC"));
    refuses(j, "NFKC", "normalizer.type is \"NFKC\"");
    cJSON *seq = typed("Sequence"), *list = cJSON_AddArrayToObject(seq, "normalizers");
    cJSON_AddItemToArray(list, typed("NFC"));
    cJSON_AddItemToArray(list, typed("Lowercase"));
    set(j = base(), "normalizer", seq);
    refuses(j, "Lowercase", "normalizer.normalizers[1].type is \"Lowercase\"");
    set(j = base(), "decoder", typed("WordPiece"));
    refuses(j, "decoder", "decoder.type is \"WordPiece\"");
    set(j = base(), "decoder", cJSON_CreateNull());
    refuses(j, "no decoder", "decoder is null");
    set(j = base(), "post_processor", typed("RobertaProcessing"));
    refuses(j, "Roberta", "post_processor.type is \"RobertaProcessing\"");
    set(at(j = base(), "model", NULL), "dropout", cJSON_CreateNumber(0.1));
    refuses(j, "dropout", "model.dropout");
    set(at(j = base(), "model", NULL), "byte_fallback", cJSON_CreateTrue());
    refuses(j, "byte_fallback", "model.byte_fallback is true");
    set(at(j = base(), "model", NULL), "continuing_subword_prefix", cJSON_CreateString("##"));
    refuses(j, "prefix", "model.continuing_subword_prefix");
    set(at(j = base(), "model", NULL), "end_of_word_suffix", cJSON_CreateString("</w>"));
    refuses(j, "suffix", "model.end_of_word_suffix");
    set(at(j = base(), "model", NULL), "unk_token", cJSON_CreateString("<unk>"));
    refuses(j, "unk", "model.unk_token \"<unk>\" is not in model.vocab");
    set(j = base(), "version", cJSON_CreateString("2.0"));
    refuses(j, "version", "version");
    /* ids */
    double ids[] = {-1, 1.5, 16777216, 1e300};
    for (int i = 0; i < 4; i++) {
        set(at(j = base(), "model", "vocab"), "abc", cJSON_CreateNumber(ids[i]));
        refuses(j, "bad id", "model.vocab[\"abc\"]: the id of the token is");
    }
    set(at(j = base(), "model", "vocab"), "abc", cJSON_CreateString("7"));
    refuses(j, "string id", "model.vocab[\"abc\"]: the id of the token is not a number");
    set(at(j = base(), "model", "vocab"), "abc", cJSON_CreateNumber('a'));
    refuses(j, "duplicated id", "model.vocab: id 97 is given to both");
    cJSON_AddNumberToObject(at(j = base(), "model", "vocab"), "abc", 300);
    refuses(j, "duplicated token", "model.vocab: \"abc\" appears twice");
    /* merges */
    cJSON_AddItemToArray(at(j = base(), "model", "merges"), cJSON_CreateString("ab c"));
    refuses(j, "unknown merge", "model.merges[4]: \"ab\" is not in model.vocab");
    cJSON_AddItemToArray(at(j = base(), "model", "merges"), cJSON_CreateString("a b c"));
    refuses(j, "three parts", "model.merges[4] is \"a b c\": expected two tokens");
    cJSON_AddItemToArray(at(j = base(), "model", "merges"), cJSON_CreateString("a b"));
    refuses(j, "merged token missing", "model.merges[4]: \"ab\" is not in model.vocab");
    cJSON_AddItemToArray(at(j = base(), "model", "merges"), cJSON_CreateNumber(3));
    refuses(j, "number merge", "model.merges[4]: expected a string");
    /* added tokens */
    cJSON *tok = cJSON_GetArrayItem(at(j = base(), "added_tokens", NULL), 0);
    set(tok, "id", cJSON_CreateNumber(T_EOS + 5));
    refuses(j, "added id",
            "added_tokens[0] (\"<|endoftext|>\"): the file gives id 266 but "
            "Hugging Face tokenizers assigns it id 261");
    set(cJSON_GetArrayItem(at(j = base(), "added_tokens", NULL), 0), "content",
        cJSON_CreateString(""));
    refuses(j, "empty added", "added_tokens[0]: the content is empty");
    j = base();
    cJSON_AddItemToArray(at(j, "added_tokens", NULL),
                         cJSON_Duplicate(cJSON_GetArrayItem(at(j, "added_tokens", NULL), 0), 1));
    refuses(j, "listed twice", "added_tokens[1]");
    /* post-processor template */
    cJSON *tp = typed("TemplateProcessing"), *single = cJSON_AddArrayToObject(tp, "single");
    cJSON *first = cJSON_CreateObject(), *sp = cJSON_AddObjectToObject(first, "SpecialToken");
    cJSON_AddStringToObject(sp, "id", "<s>");
    cJSON_AddItemToArray(single, first);
    cJSON *specials = cJSON_AddObjectToObject(tp, "special_tokens"),
          *s = cJSON_AddObjectToObject(specials, "<s>");
    int two[] = {1, 2};
    cJSON_AddItemToObject(s, "ids", cJSON_CreateIntArray(two, 2));
    set(j = base(), "post_processor", tp);
    refuses(j, "two ids", "post_processor.special_tokens[\"<s>\"].ids must hold exactly one id");
    /* JSON cut short anywhere */
    char *full = cJSON_PrintUnformatted(j = base());
    cJSON_Delete(j);
    size_t n = strlen(full), n_cut = 0;
    for (size_t cut = 0; cut < n; cut += 97) {
        BpeModel *m = NULL;
        err[0] = 0;
        int rc = bpe_parse(&m, full, cut, "t.json", err, sizeof err);
        CHECK(rc != 0 && m == NULL, "accepted the first %zu bytes", cut);
        bpe_free(m);
        n_cut += strstr(err, "not valid JSON") != NULL;
    }
    CHECK(n_cut == (n + 96) / 97, "%zu of %zu cuts said \"not valid JSON\"", n_cut, (n + 96) / 97);
    free(full);
    char big[] = "[1, 2]";
    CHECK(bpe_parse(&(BpeModel *){NULL}, big, strlen(big), "t.json", err, sizeof err) != 0);
    CHECK_MSG(err, "t.json: not a JSON object");
}

/* ---------------------------------------------------------------- threads */

#define N_TEXTS 400
static const BpeModel *shared;
static char *texts[N_TEXTS];
static uint32_t *want[N_TEXTS];
static size_t want_n[N_TEXTS];

static void *encode_all(void *arg) {
    int *bad = arg;
    uint32_t *ids = NULL;
    size_t n = 0, cap = 0;
    char e[256];
    for (int round = 0; round < 5; round++)
        for (int i = 0; i < N_TEXTS; i++) {
            int k = (i * 7 + round * 13) % N_TEXTS;
            if (bpe_encode(shared, texts[k], strlen(texts[k]), &ids, &n, &cap, e, sizeof e) ||
                n != want_n[k] || memcmp(ids, want[k], n * sizeof *ids))
                (*bad)++;
        }
    free(ids);
    return NULL;
}

static void threads(void) {
    BpeModel *m = parse(base());
    CHECK(m != NULL, "%s", err);
    if (!m) return;
    shared = m;
    const char *words[] = {"the",  " the", "then", " in", "abc", "<|endoftext|>",
                           " 123", "é",    " ",    "\n",  "in"};
    uint64_t r = 1;
    for (int i = 0; i < N_TEXTS; i++) {
        char buf[512] = "";
        for (int w = 0; w < 30; w++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            strcat(buf, words[(r >> 33) % 11]);
        }
        texts[i] = strdup(buf);
        size_t cap = 0;
        CHECK_OK(bpe_encode(m, buf, strlen(buf), &want[i], &want_n[i], &cap, err, sizeof err), err);
    }
    pthread_t th[4];
    int bad[4] = {0};
    for (int t = 0; t < 4; t++)
        pthread_create(&th[t], NULL, encode_all, &bad[t]);
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    CHECK(bad[0] + bad[1] + bad[2] + bad[3] == 0, "%d texts encoded differently on 4 threads",
          bad[0] + bad[1] + bad[2] + bad[3]);
    for (int i = 0; i < N_TEXTS; i++) {
        free(texts[i]);
        free(want[i]);
    }
    bpe_free(m);
}

/* -------------------------------------------------- `dapt tokenize`, 4-byte */

static void tokenize_big_vocab(void) {
    char dir[64], path[256], corpus[256], out[256];
    if (scratch_make(dir, sizeof dir, "bpe")) {
        CHECK(0, "no scratch directory");
        return;
    }
    /* a token at id 70000 makes 70001 ids: more than 16-bit tokens hold */
    cJSON *j = base();
    cJSON_AddNumberToObject(at(j, "model", "vocab"), "zzzz", 70000);
    set(cJSON_GetArrayItem(at(j, "added_tokens", NULL), 0), "id", cJSON_CreateNumber(T_EOS + 1));
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    snprintf(path, sizeof path, "%s/big.json", dir);
    FILE *f = fopen(path, "w");
    fputs(s, f);
    fclose(f);
    free(s);
    snprintf(corpus, sizeof corpus, "%s/docs.txt", dir);
    const char *docs[] = {"the zzzz then", "in\nin the", "é é <|endoftext|> é"};
    f = fopen(corpus, "w");
    for (int i = 0; i < 3; i++)
        fprintf(f, "%s%s", i ? "\n\n" : "", docs[i]);
    fclose(f);
    snprintf(out, sizeof out, "%s/out", dir);
    TokOptions o;
    tok_options_default(&o);
    o.tokenizer_path = path;
    o.out_dir = out;
    const char *in[] = {corpus};
    o.inputs = in;
    o.n_inputs = 1;
    o.val_frac = 0;
    TokStats st;
    CHECK_OK(tok_run(&o, &st, err, sizeof err), err);
    CHECK(st.token_bytes == 4 && st.docs_train == 3);
    Tokenizer *t;
    CHECK_OK(tokenizer_load(&t, path, err, sizeof err), err);
    char shard_path[300];
    snprintf(shard_path, sizeof shard_path, "%s/train-00000.tok.zst", out);
    Shard *sh;
    CHECK_OK(shard_open(&sh, shard_path, err, sizeof err), err);
    if (sh && t) {
        const ShardHeader *h = shard_header(sh);
        CHECK(h->token_bytes == 4 && h->vocab_size == 70001 && h->eos_id == T_EOS + 1,
              "header: %u-byte tokens, vocab %u, eos %u", h->token_bytes, h->vocab_size, h->eos_id);
        CHECK(h->tokenizer_hash == tokenizer_hash(t));
        uint32_t got[256], *ids = NULL;
        size_t n = 0, cap = 0, k = 0;
        CHECK(shard_frame_tokens(sh, 0) < 256);
        CHECK_OK(shard_read_frame(sh, 0, got, err, sizeof err), err);
        int same = 1;
        for (int i = 0; i < 3; i++) {
            CHECK_OK(
                tokenizer_encode_doc(t, docs[i], strlen(docs[i]), &ids, &n, &cap, err, sizeof err),
                err);
            same &= k + n <= shard_frame_tokens(sh, 0) && !memcmp(got + k, ids, n * sizeof *ids);
            k += n;
        }
        CHECK(same && k == shard_frame_tokens(sh, 0), "the shard holds other tokens");
        free(ids);
        shard_close(sh);
    }
    tokenizer_free(t);
    if (!check_failures) scratch_remove(dir);
}

int main(void) {
    known_answers();
    refusals();
    threads();
    tokenize_big_vocab();
    return CHECK_DONE();
}
