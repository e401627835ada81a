# End-to-end MoE checks of `dapt train` (tests/moe/moe_e2e.sh).
add_test(NAME moe_e2e
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/moe_e2e.sh $<TARGET_FILE:dapt> ${DAPT_PYTHON})
set_tests_properties(moe_e2e PROPERTIES LABELS py TIMEOUT 600)
# Global-batch LBL over 2 MPI ranks equals one process (tests/moe/moe_dist.sh),
# and the non-blocking int64 sum of trainer/dist.h at 2 ranks (test_dist runs
# at 3 in tests/dist).
if(DAPT_HAVE_MPI AND MPIEXEC_EXECUTABLE)
  add_test(NAME moe_dist
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/moe_dist.sh $<TARGET_FILE:dapt> ${DAPT_PYTHON}
                   ${MPIEXEC_EXECUTABLE})
  set_tests_properties(moe_dist PROPERTIES LABELS py TIMEOUT 600)
  add_test(NAME moe_dist_sum_2ranks
           COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none -np 2
                   $<TARGET_FILE:test_dist>)
  set_tests_properties(moe_dist_sum_2ranks PROPERTIES LABELS py TIMEOUT 300)
endif()
