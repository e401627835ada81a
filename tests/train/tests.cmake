# End-to-end tests of `dapt train` (tests/train/train_e2e.sh).
foreach(mode metrics resume signal errors nonfinite)
  add_test(NAME train_${mode}
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/train_e2e.sh $<TARGET_FILE:dapt> ${DAPT_PYTHON} ${mode})
  set_tests_properties(train_${mode} PROPERTIES LABELS py TIMEOUT 600)
endforeach()
