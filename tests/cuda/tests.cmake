# CUDA tests (label "cuda"), built only when the build has CUDA. Without a
# GPU they print "no GPU" and exit 77, which ctest counts as skipped, never
# as passed. cuda_ops_harness runs the same program CPU-against-CPU, so the
# harness itself (poisoning, comparisons, shapes) is exercised on every build.
if(DAPT_HAVE_CUDA)
  add_executable(test_cuda_ops ${CMAKE_CURRENT_LIST_DIR}/test_cuda_ops.c)
  target_link_libraries(test_cuda_ops PRIVATE ${dapt_libs} ${MATH_LIB})
  add_test(NAME cuda_ops COMMAND test_cuda_ops)
  set_tests_properties(cuda_ops PROPERTIES LABELS cuda SKIP_RETURN_CODE 77)
  add_test(NAME cuda_ops_harness ${FULL} COMMAND test_cuda_ops --device cpu)
  # one OpenMP thread: the CPU side is tiny, and oversubscribed threads on a
  # small CI machine make it 15x slower
  set_tests_properties(cuda_ops_harness PROPERTIES LABELS cuda ENVIRONMENT OMP_NUM_THREADS=1)
  # whole training steps: fp32 parity with the CPU, bf16 loss curves
  add_executable(test_cuda_train ${CMAKE_CURRENT_LIST_DIR}/test_cuda_train.c)
  target_link_libraries(test_cuda_train PRIVATE ${dapt_libs} ${MATH_LIB})
  add_test(NAME cuda_train COMMAND test_cuda_train)
  set_tests_properties(cuda_train PROPERTIES LABELS cuda SKIP_RETURN_CODE 77)
  add_test(NAME cuda_train_harness COMMAND test_cuda_train --device cpu)
  set_tests_properties(cuda_train_harness PROPERTIES LABELS cuda ENVIRONMENT OMP_NUM_THREADS=1)
  # the throughput benchmark: built here, run by tools/gpu-check (not a test)
  add_executable(bench_cuda ${CMAKE_CURRENT_LIST_DIR}/bench_cuda.c)
  target_link_libraries(bench_cuda PRIVATE ${dapt_libs} ${MATH_LIB})
endif()
# the NCCL path of `dapt train` at world size 1 against the same run without
# NCCL (bitwise); tools/gpu-check runs it as stage "nccl" on a GPU machine
if(DAPT_HAVE_CUDA)
  add_test(NAME cuda_nccl_train
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/nccl_check.sh $<TARGET_FILE:dapt> make)
  set_tests_properties(cuda_nccl_train PROPERTIES LABELS cuda SKIP_RETURN_CODE 77 TIMEOUT 600)
  # `dapt train` on cuda against cpu, and its exact resume (stage "cli");
  # the harness runs the same checks cpu against cpu
  add_test(NAME cuda_cli_train COMMAND ${CMAKE_CURRENT_LIST_DIR}/cli_check.sh $<TARGET_FILE:dapt> make)
  set_tests_properties(cuda_cli_train PROPERTIES LABELS cuda SKIP_RETURN_CODE 77 TIMEOUT 600)
  add_test(NAME cuda_cli_train_harness ${FULL}
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/cli_check.sh $<TARGET_FILE:dapt> make cpu)
  set_tests_properties(cuda_cli_train_harness PROPERTIES LABELS cuda TIMEOUT 600)
endif()
