// tokenizer/spm.cc: the extern "C" shim over sentencepiece declared in
// tokenizer/spm.h. No exception or sentencepiece status crosses the C
// boundary: every entry point catches and converts to (return code, message).
#include "tokenizer/spm.h"
#include "kernels/util.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unordered_map>
#include <vector>

struct SpmModel {
    sentencepiece::SentencePieceProcessor sp;
};

static int spm_fail(char *err, size_t errlen, const std::string &msg) {
    if (err && errlen) err_set(err, errlen, "%s", msg.c_str());
    return -1;
}

extern "C" int spm_load(SpmModel **out, const char *model_path, char *err, size_t errlen) {
    *out = nullptr;
    try {
        SpmModel *m = new SpmModel;
        auto st = m->sp.Load(model_path);
        if (!st.ok()) {
            delete m;
            return spm_fail(err, errlen, std::string(model_path) + ": cannot load sentencepiece model: " +
                                             st.ToString());
        }
        *out = m;
        return 0;
    } catch (const std::exception &e) {
        return spm_fail(err, errlen, std::string(model_path) + ": " + e.what());
    }
}

extern "C" void spm_free(SpmModel *m) { delete m; }

extern "C" uint32_t spm_vocab_size(const SpmModel *m) { return (uint32_t)m->sp.GetPieceSize(); }

extern "C" int spm_eos_id(const SpmModel *m) { return m->sp.eos_id(); }
extern "C" int spm_bos_id(const SpmModel *m) { return m->sp.bos_id(); }

extern "C" int spm_encode(const SpmModel *m, const char *text, size_t n_bytes, uint32_t **ids,
                          size_t *n_ids, size_t *cap, char *err, size_t errlen) {
    try {
        std::vector<int> v;
        auto st = m->sp.Encode(absl::string_view(text, n_bytes), &v);
        if (!st.ok()) return spm_fail(err, errlen, "sentencepiece encode: " + st.ToString());
        if (v.size() > *cap) {
            size_t c = v.size() + v.size() / 2 + 16;
            uint32_t *p = (uint32_t *)realloc(*ids, c * sizeof(uint32_t));
            if (!p) return spm_fail(err, errlen, "out of memory");
            *ids = p;
            *cap = c;
        }
        for (size_t i = 0; i < v.size(); i++) (*ids)[i] = (uint32_t)v[i];
        *n_ids = v.size();
        return 0;
    } catch (const std::exception &e) {
        return spm_fail(err, errlen, std::string("sentencepiece encode: ") + e.what());
    }
}

extern "C" int spm_decode(const SpmModel *m, const uint32_t *ids, size_t n_ids, char **text_out,
                          char *err, size_t errlen) {
    *text_out = nullptr;
    try {
        std::vector<int> v(ids, ids + n_ids);
        int n = m->sp.GetPieceSize();
        for (int id : v)
            if (id < 0 || id >= n)
                return spm_fail(err, errlen, "id " + std::to_string(id) + " is not below vocab size " +
                                                 std::to_string(n));
        std::string s;
        auto st = m->sp.Decode(v, &s);
        if (!st.ok()) return spm_fail(err, errlen, "sentencepiece decode: " + st.ToString());
        *text_out = strdup(s.c_str());
        return *text_out ? 0 : spm_fail(err, errlen, "out of memory");
    } catch (const std::exception &e) {
        return spm_fail(err, errlen, std::string("sentencepiece decode: ") + e.what());
    }
}

extern "C" int spm_train_bpe(const char *input_path, const char *prefix, uint32_t vocab_size,
                             int n_threads, char *err, size_t errlen) {
    try {
        std::unordered_map<std::string, std::string> kw = {
            {"input", input_path},
            {"model_prefix", prefix},
            {"vocab_size", std::to_string(vocab_size)},
            {"model_type", "bpe"},
            {"byte_fallback", "true"},
            {"character_coverage", "0.9995"},
            // Keep the text as it is (newlines, runs of spaces) as LLM
            // tokenizers do; byte fallback encodes what has no piece.
            {"normalization_rule_name", "identity"},
            {"remove_extra_whitespaces", "false"},
            {"split_digits", "true"},
            // A large corpus trains on a random sample of 2M sentences.
            {"input_sentence_size", "2000000"},
            {"shuffle_input_sentence", "true"},
            {"minloglevel", "2"},
            {"num_threads", std::to_string(n_threads > 0 ? n_threads : 1)},
        };
        auto st = sentencepiece::SentencePieceTrainer::Train(kw);
        if (!st.ok()) return spm_fail(err, errlen, std::string(input_path) + ": sentencepiece training: " +
                                                       st.ToString());
        return 0;
    } catch (const std::exception &e) {
        return spm_fail(err, errlen, std::string("sentencepiece training: ") + e.what());
    }
}
