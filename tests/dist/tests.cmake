# Distributed tests (tests/dist): the MPI collectives at 3 ranks, and
# data-parallel `dapt train` under mpirun (dist_e2e.sh: equal losses at 1, 2,
# 3 ranks and with ZeRO-1, elastic resume 2 -> 3 and 3 -> 1, a killed rank).
# Only when dapt was built with MPI; mpirun runs them oversubscribed (CI has
# 2 cores) and as root (containers).
if(DAPT_HAVE_MPI AND MPIEXEC_EXECUTABLE)
  add_executable(ckpt_check ${CMAKE_CURRENT_LIST_DIR}/ckpt_check.c)
  target_link_libraries(ckpt_check PRIVATE ${dapt_libs})
  # a ZeRO checkpoint's weights, streamed chunk by chunk from the ranks that
  # own them, and its moments load back bitwise at 1, 2 and 3 ranks
  add_executable(ckpt_roundtrip ${CMAKE_CURRENT_LIST_DIR}/ckpt_roundtrip.c)
  target_link_libraries(ckpt_roundtrip PRIVATE ${dapt_libs})
  foreach(np 1 2 3)
    add_test(NAME dist_ckpt_roundtrip_np${np}
             COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none
                     -x OMP_NUM_THREADS=1 -np ${np} $<TARGET_FILE:ckpt_roundtrip>)
    set_tests_properties(dist_ckpt_roundtrip_np${np} PROPERTIES LABELS py TIMEOUT 300)
  endforeach()
  add_test(NAME dist_collectives
           COMMAND ${MPIEXEC_EXECUTABLE} --oversubscribe --allow-run-as-root --bind-to none -np 3
                   $<TARGET_FILE:test_dist>)
  set_tests_properties(dist_collectives PROPERTIES LABELS py TIMEOUT 300)
  foreach(mode equal zero23 tasks resume kill)
    # quick set: equal; the restarts (resume on other rank counts, a killed
    # rank) in the full set
    set(cfg ${FULL})
    if(mode MATCHES "^(equal|zero23|tasks)$")
      set(cfg "")
    endif()
    add_test(NAME dist_${mode} ${cfg}
             COMMAND ${CMAKE_CURRENT_LIST_DIR}/dist_e2e.sh $<TARGET_FILE:dapt> ${DAPT_PYTHON}
                     ${MPIEXEC_EXECUTABLE} $<TARGET_FILE:ckpt_check> ${mode})
    set_tests_properties(dist_${mode} PROPERTIES LABELS py TIMEOUT 900)
  endforeach()
endif()
