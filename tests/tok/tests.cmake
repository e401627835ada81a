# tests/tok: the tokenizer.json (byte-level BPE) oracle tests. HF tokenizers
# (the Rust library, in the .venv that tools/setup makes) trains small
# tokenizers of each family and encodes sample texts; tok_driver encodes
# the same texts through dapt's tokenizer interface and `dapt tokenize`; the
# ids must be equal.
add_executable(tok_driver ${CMAKE_CURRENT_SOURCE_DIR}/tok/tok_driver.c)
target_link_libraries(tok_driver PRIVATE ${dapt_libs})

set(tok_need_venv "if [ ! -x \"$0\" ]; then echo \"$0 not found: run tools/setup to make the .venv\" >&2; exit 1; fi; exec \"$0\" \"$@\"")
# quick: every family on ~600 texts (a few seconds); full: also every code point
add_test(NAME tok_bpe_hf
         COMMAND sh -c "${tok_need_venv}" ${DAPT_HF_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/tok/test_bpe_hf.py
                 $<TARGET_FILE:tok_driver> $<TARGET_FILE:dapt>)
add_test(NAME tok_bpe_hf_sweep ${FULL}
         COMMAND sh -c "${tok_need_venv}" ${DAPT_HF_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/tok/test_bpe_hf.py
                 $<TARGET_FILE:tok_driver> $<TARGET_FILE:dapt> sweep)
set_tests_properties(tok_bpe_hf tok_bpe_hf_sweep PROPERTIES LABELS py)
set_tests_properties(tok_bpe_hf_sweep PROPERTIES TIMEOUT 900)
