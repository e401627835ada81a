# tests/gguf: GGUF export/import checks beyond the C unit tests
# (tests/c/test_gguf*.c, label "c").
#   label "c":    CLI refusals of the logits/export/import commands
#   label "py":   gguf-py (llama.cpp's GGUF reader) reads every export; `dapt
#                 logits` matches HF transformers. Python from tools/setup's .venv.
#   label "slow": llama.cpp itself (PyPI llama-cpp-python, installed by
#                 tools/setup through tests/gguf/install_llama_cpp.sh) computes the
#                 same logits and tokenizes like sentencepiece and like HF
#                 tokenizers (byte-level BPE).
#                 In the full set only: ctest --test-dir build -C full -L slow
set(gguf_dir ${CMAKE_CURRENT_SOURCE_DIR}/gguf)
set(gguf_need_venv "if [ ! -x \"$0\" ]; then echo \"$0 not found: run tools/setup to make the .venv\" >&2; exit 1; fi; exec \"$0\" \"$@\"")

# --- CLI refusals (no Python) ---
# each through tests/cli/expect.sh: the exact exit status (2: a usage error,
# 1: a refusal; a crash is neither) and the message on stderr
set(gguf_expect ${CMAKE_SOURCE_DIR}/tests/cli/expect.sh)
add_test(NAME gguf_cli_logits_bad_ids
         COMMAND ${gguf_expect} 2 "item 2 \\('x'\\) is not a token id" $<TARGET_FILE:dapt> logits
                 ${gguf_dir} --ids 1,x,3)
add_test(NAME gguf_cli_logits_no_model
         COMMAND ${gguf_expect} 1 "no-such-dir/config.json: cannot open" $<TARGET_FILE:dapt> logits
                 ${gguf_dir}/no-such-dir --ids 1)
add_test(NAME gguf_cli_import_not_gguf
         COMMAND ${gguf_expect} 1 "tests.cmake: byte offset 0: not a GGUF file" $<TARGET_FILE:dapt>
                 import gguf ${gguf_dir}/tests.cmake ${CMAKE_BINARY_DIR}/gguf_never)
add_test(NAME gguf_cli_import_truncated
         COMMAND ${gguf_expect} 1 "truncated.gguf: byte offset [0-9]+: .*past the end"
                 $<TARGET_FILE:dapt> import gguf ${gguf_dir}/corpus/truncated.gguf
                 ${CMAKE_BINARY_DIR}/gguf_never)
add_test(NAME gguf_cli_export_usage
         COMMAND ${gguf_expect} 2 "the only format is gguf" $<TARGET_FILE:dapt> export onnx a b)
set_tests_properties(gguf_cli_logits_bad_ids gguf_cli_logits_no_model gguf_cli_import_not_gguf
                     gguf_cli_import_truncated gguf_cli_export_usage PROPERTIES LABELS c)

# --- gguf-py and transformers (label py) ---
foreach(kind llama_gqa llama_mha_tied qwen2 gpt2 mixtral)
  foreach(dtype f32 f16 bf16 q8_0)
    # quick set: q8_0 of every architecture, f32 of llama_gqa and gpt2
    set(cfg ${FULL})
    if(dtype STREQUAL "q8_0" OR (dtype STREQUAL "f32" AND kind MATCHES "^(llama_gqa|gpt2)$"))
      set(cfg "")
    endif()
    add_test(NAME gguf_py_${kind}_${dtype} ${cfg}
             COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_py.py
                     export ${kind} ${dtype} $<TARGET_FILE:dapt>)
    set_tests_properties(gguf_py_${kind}_${dtype} PROPERTIES LABELS py)
  endforeach()
endforeach()
foreach(kind llama_gqa llama_mha_tied gpt2 mixtral)
  # quick set: llama_gqa's logits and round trip, mixtral's logits
  set(cfg ${FULL})
  if(kind MATCHES "^(llama_gqa|mixtral)$")
    set(cfg "")
  endif()
  add_test(NAME gguf_logits_${kind} ${cfg}
           COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_py.py
                   logits ${kind} $<TARGET_FILE:dapt>)
  set_tests_properties(gguf_logits_${kind} PROPERTIES LABELS py)
  if(NOT kind STREQUAL "llama_gqa")
    set(cfg ${FULL})
  endif()
  add_test(NAME gguf_roundtrip_${kind} ${cfg}
           COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_py.py
                   roundtrip ${kind} $<TARGET_FILE:dapt>)
  set_tests_properties(gguf_roundtrip_${kind} PROPERTIES LABELS py)
endforeach()

# the newer architectures (Llama 3.x rope scaling, Qwen3): models made by
# transformers 4.51.3 in .venv-hf (DAPT_HF_NEW_PYTHON), read by gguf-py here;
# skipped (77) without .venv-hf. Quick set: the f32 exports of llama31
# (rope_freqs.weight) and qwen3 (q/k norms, key_length, no Q/K permutation).
set(gguf_arch_cases "")
foreach(kind llama31 llama_linear qwen3 qwen3_tied)
  foreach(dtype f32 q8_0)
    set(cfg ${FULL})
    if(dtype STREQUAL "f32" AND kind MATCHES "^(llama31|qwen3)$")
      set(cfg "")
    endif()
    add_test(NAME gguf_arch_export_${kind}_${dtype} ${cfg}
             COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_arch.py
                     export ${kind} ${dtype} $<TARGET_FILE:dapt> ${DAPT_HF_NEW_PYTHON})
    list(APPEND gguf_arch_cases gguf_arch_export_${kind}_${dtype})
  endforeach()
  add_test(NAME gguf_arch_roundtrip_${kind} ${FULL}
           COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_arch.py
                   roundtrip ${kind} $<TARGET_FILE:dapt> ${DAPT_HF_NEW_PYTHON})
  list(APPEND gguf_arch_cases gguf_arch_roundtrip_${kind})
endforeach()
set_tests_properties(${gguf_arch_cases} PROPERTIES LABELS py SKIP_RETURN_CODE 77)

# byte-level BPE tokenizers (HF tokenizers), one per llama.cpp pre-tokenizer
# family: export read by gguf-py, import of a gguf-py file and the round
# trip; quick set: llama-bpe's export and round trip
foreach(family gpt-2 llama-bpe qwen2)
  set(cfg ${FULL})
  if(family STREQUAL "llama-bpe")
    set(cfg "")
  endif()
  add_test(NAME gguf_py_bpe_export_${family} ${cfg}
           COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_py.py
                   export_bpe ${family} $<TARGET_FILE:dapt>)
  add_test(NAME gguf_py_bpe_roundtrip_${family} ${cfg}
           COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_py.py
                   import_bpe ${family} dapt $<TARGET_FILE:dapt>)
  add_test(NAME gguf_py_bpe_import_${family} ${FULL}
           COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_py.py
                   import_bpe ${family} gguf-py $<TARGET_FILE:dapt>)
  set_tests_properties(gguf_py_bpe_export_${family} gguf_py_bpe_roundtrip_${family}
                       gguf_py_bpe_import_${family} PROPERTIES LABELS py)
endforeach()

add_test(NAME gguf_cli_refuse_bpe
         COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_py.py
                 refuse_bpe $<TARGET_FILE:dapt>)
set_tests_properties(gguf_cli_refuse_bpe PROPERTIES LABELS py)

add_test(NAME gguf_cli_refuse_qwen_moe
         COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_py.py
                 refuse_qwen_moe $<TARGET_FILE:dapt>)
set_tests_properties(gguf_cli_refuse_qwen_moe PROPERTIES LABELS py)

# --- llama.cpp itself (label slow) ---
# They need llama-cpp-python in the .venv (tools/setup installs it:
# tests/gguf/install_llama_cpp.sh). Without it they exit 77 before torch
# loads and are reported as skipped with that instruction, never passed.
set(gguf_slow_cases "")
# one test per model kind, its dtypes in one process (the torch and
# transformers imports, most of a case's time, paid once)
foreach(kind llama_gqa llama_mha_tied llama_gqa_tied llama_mha qwen2 gpt2 mixtral)
  add_test(NAME gguf_llamacpp_${kind} ${FULL}
           COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_llamacpp.py
                   logits ${kind} f32,f16,bf16,q8_0 $<TARGET_FILE:dapt>)
  list(APPEND gguf_slow_cases gguf_llamacpp_${kind})
endforeach()
foreach(kind llama31 llama_linear qwen3 qwen3_tied)
  add_test(NAME gguf_llamacpp_arch_${kind} ${FULL}
           COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_arch.py
                   llamacpp ${kind} f32,q8_0 $<TARGET_FILE:dapt> ${DAPT_HF_NEW_PYTHON})
  list(APPEND gguf_slow_cases gguf_llamacpp_arch_${kind})
endforeach()
add_test(NAME gguf_llamacpp_tokenizer ${FULL}
         COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_llamacpp.py
                 tokenizer $<TARGET_FILE:dapt>)
list(APPEND gguf_slow_cases gguf_llamacpp_tokenizer)
foreach(family gpt-2 llama-bpe qwen2)
  add_test(NAME gguf_llamacpp_tokenizer_bpe_${family} ${FULL}
           COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_llamacpp.py
                   tokenizer_bpe ${family} $<TARGET_FILE:dapt>)
  list(APPEND gguf_slow_cases gguf_llamacpp_tokenizer_bpe_${family})
endforeach()
add_test(NAME gguf_llamacpp_logits_bpe ${FULL}
         COMMAND sh -c "${gguf_need_venv}" ${DAPT_HF_PYTHON} ${gguf_dir}/test_gguf_llamacpp.py
                 logits_bpe llama-bpe $<TARGET_FILE:dapt>)
list(APPEND gguf_slow_cases gguf_llamacpp_logits_bpe)
set_tests_properties(${gguf_slow_cases} PROPERTIES LABELS slow SKIP_RETURN_CODE 77 TIMEOUT 600)
