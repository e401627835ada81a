# End-to-end tests of `dapt train` (tests/train/train_e2e.sh).
foreach(mode metrics resume signal errors nonfinite arch plan recompute sources continue diskfull rundir checksum resumecfg killloop ckptfull evalhook progress)
  # the kill loop (20-30 s) in the full set only
  set(cfg "")
  if(mode STREQUAL "killloop")
    set(cfg ${FULL})
  endif()
  add_test(NAME train_${mode} ${cfg}
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/train_e2e.sh $<TARGET_FILE:dapt> ${DAPT_PYTHON} ${mode})
  set_tests_properties(train_${mode} PROPERTIES LABELS py TIMEOUT 600)
endforeach()
# [log] tensorboard read back by the tensorboard package (PyPI, in the .venv)
add_test(NAME train_tensorboard
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/train_e2e.sh $<TARGET_FILE:dapt> ${DAPT_HF_PYTHON} tensorboard)
set_tests_properties(train_tensorboard PROPERTIES LABELS py TIMEOUT 600)
# A Hugging Face byte-level BPE tokenizer directory end to end (tokenize,
# train, checkpoint contents loaded by transformers' AutoTokenizer, sample,
# init_from, refusals): tests/train/bpe_e2e.py, HF tokenizers and
# transformers from the .venv.
add_test(NAME train_bpe_tokenizer
         COMMAND ${DAPT_HF_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/bpe_e2e.py $<TARGET_FILE:dapt>)
set_tests_properties(train_bpe_tokenizer PROPERTIES LABELS py TIMEOUT 600)
# tools/plot draws per-source curves, task scores, hook results and MoE
# loads as the records say (tests/train/plot_check.py; matplotlib).
add_test(NAME train_plot COMMAND ${DAPT_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/plot_check.py
                                 ${CMAKE_SOURCE_DIR}/tools/plot)
set_tests_properties(train_plot PROPERTIES LABELS py)
