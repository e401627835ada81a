# End-to-end MoE checks of `dapt train` (tests/moe/moe_e2e.sh).
add_test(NAME moe_e2e
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/moe_e2e.sh $<TARGET_FILE:dapt> ${DAPT_PYTHON})
set_tests_properties(moe_e2e PROPERTIES LABELS py TIMEOUT 600)
