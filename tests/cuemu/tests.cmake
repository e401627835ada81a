# The CUDA backend on the host emulator (docs/cuda.md, "Without a GPU"): every
# kernels/cuda source, rewritten by hostify.py and compiled by the host C++
# compiler against cuemu.h, runs the CUDA test programs on any machine (no
# nvcc, no GPU). Label "emu"; the programs are the GPU ones (tests/cuda)
# linked against this library instead of the real backend.
# Not in the sanitizer build (its fibers switch stacks behind ASan's back)
# and only with the Python that hostify.py runs on: without it one test,
# cuemu_self, says so and is reported skipped (exit 77), instead of the
# emulator's tests vanishing from the list.
if(DAPT_SANITIZE)
  return()
endif()
if(NOT EXISTS ${DAPT_PYTHON})
  add_test(NAME cuemu_self COMMAND sh -c "echo 'skipped: the CUDA emulator and every emu_* \
test are not built: no Python at DAPT_PYTHON=${DAPT_PYTHON} to run hostify.py'; exit 77")
  set_tests_properties(cuemu_self PROPERTIES LABELS emu SKIP_RETURN_CODE 77)
  return()
endif()
set(cuemu_dir ${CMAKE_BINARY_DIR}/cuemu)
file(GLOB cuemu_in CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/kernels/cuda/*.cu
     ${CMAKE_SOURCE_DIR}/kernels/cuda/*.cuh)
set(cuemu_out "")
foreach(f ${cuemu_in})
  get_filename_component(name ${f} NAME)
  if(name MATCHES "\\.cu$")
    set(out ${cuemu_dir}/kernels/cuda/${name}.cc)
  else()
    set(out ${cuemu_dir}/kernels/cuda/${name})
  endif()
  add_custom_command(OUTPUT ${out}
    COMMAND ${DAPT_PYTHON} ${CMAKE_CURRENT_LIST_DIR}/hostify.py ${f} ${out}
    DEPENDS ${f} ${CMAKE_CURRENT_LIST_DIR}/hostify.py
    COMMENT "hostify ${name}")
  list(APPEND cuemu_out ${out})
endforeach()

# An OBJECT library: its objects are linked into each program whole, before
# any archive, so its ops_get/ops_cuda (and every other symbol of the CUDA
# backend) are the program's, and the linker never takes the real backend's
# (or the no-CUDA stubs') members from dapt_kernels' archives.
add_library(dapt_cuemu OBJECT ${cuemu_out} ${CMAKE_CURRENT_LIST_DIR}/cuemu.cc
            ${CMAKE_SOURCE_DIR}/kernels/ops.c)
# the rewritten headers before the originals
target_include_directories(dapt_cuemu BEFORE PRIVATE ${cuemu_dir})
target_compile_definitions(dapt_cuemu PRIVATE DAPT_CUEMU DAPT_HAVE_CUDA)
target_compile_options(dapt_cuemu PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wno-unknown-pragmas -fno-strict-aliasing>)
target_link_libraries(dapt_cuemu PUBLIC dapt_kernels dapt_blas ${CMAKE_DL_LIBS})

foreach(prog test_cuda_ops test_cuda_train bench_cuda)
  add_executable(${prog}_emu ${CMAKE_SOURCE_DIR}/tests/cuda/${prog}.c)
  target_link_libraries(${prog}_emu PRIVATE dapt_cuemu ${dapt_libs} ${MATH_LIB})
  set_target_properties(${prog}_emu PROPERTIES LINKER_LANGUAGE CXX)
endforeach()
add_executable(test_cuemu ${CMAKE_CURRENT_LIST_DIR}/test_cuemu.cc)
target_include_directories(test_cuemu BEFORE PRIVATE ${cuemu_dir})
target_compile_definitions(test_cuemu PRIVATE DAPT_CUEMU)
target_link_libraries(test_cuemu PRIVATE dapt_cuemu)

add_test(NAME cuemu_self COMMAND test_cuemu)
set_tests_properties(cuemu_self PROPERTIES LABELS emu)

# the GPU test programs on the emulator: each op group in its own test (so
# ctest runs them side by side; attention is the long one, 3-6 minutes);
# the groups that take seconds are in the quick set, norms and attention
# in the full one (${FULL}, tests/CMakeLists.txt);
# one OpenMP thread for the CPU reference, as the harness tests
# CUEMU_BANK_CONFLICTS=fail: an ldmatrix whose rows share shared-memory
# banks is a fault (the version-2 attention is designed conflict-free)
# The groups with a reverse-order run below (norms, attention, moe, arch)
# write a digest of their outputs for it to compare bitwise.
# --long-t 300: the attention group's long shapes (the benchmark llama's GQA
# group of 8, and HD 128 without GQA) at 2 whole 128-row query tiles and a
# partial one, 4 whole 64-row key/value tiles and a partial one: every
# buffer of the double-buffered loops is refilled, every dK/dV split of the
# group runs (T = 1000 on a GPU; 520 before, (300/520)^2 = 1/3 of its work)
set(order_groups norms attention moe arch)
foreach(group memory embed norms matmul attention activations lmhead optimizer moe arch)
  set(cfg "")
  if(group MATCHES "^(norms|attention)$")
    set(cfg ${FULL})
  endif()
  set(extra "")
  if(group STREQUAL "attention")
    set(extra --long-t 300)
  endif()
  if(group IN_LIST order_groups)
    list(APPEND extra --digest ${cuemu_dir}/order-${group}-forward.txt)
  endif()
  add_test(NAME emu_ops_${group} ${cfg} COMMAND test_cuda_ops_emu --only ${group} ${extra})
  set_tests_properties(emu_ops_${group} PROPERTIES LABELS emu TIMEOUT 1200
                       ENVIRONMENT "OMP_NUM_THREADS=1;CUEMU_BANK_CONFLICTS=fail")
  if(group IN_LIST order_groups)
    set_tests_properties(emu_ops_${group} PROPERTIES FIXTURES_SETUP order_${group})
  endif()
endforeach()
# the LM head in chunks of 100 rows (cuda.lmhead_chunk_rows, an A/B knob of
# kernels/cuda/lmhead.cu): every lmhead shape then spans several chunks
add_test(NAME emu_ops_lmhead_chunks ${FULL} COMMAND test_cuda_ops_emu --only lmhead
         --cuda.lmhead_chunk_rows=100)
set_tests_properties(emu_ops_lmhead_chunks PROPERTIES LABELS emu TIMEOUT 1200
                     ENVIRONMENT OMP_NUM_THREADS=1)
add_test(NAME emu_train ${FULL} COMMAND test_cuda_train_emu)
# the newer architectures' steps alone (Llama-3.1-style rope scaling, Qwen3's
# q/k norms and free head size: parity with the CPU and bf16 curves; 45-90 s;
# their ops are in the quick set as op group arch)
add_test(NAME emu_train_arch ${FULL} COMMAND test_cuda_train_emu --only arch)
# the MoE parts again with the grouped expert GEMMs (as tools/gpu-check
# runs them)
add_test(NAME emu_train_moe_grouped ${FULL} COMMAND test_cuda_train_emu --only moe
         --cuda.moe_grouped_gemm=true)
set_tests_properties(emu_train emu_train_moe_grouped emu_train_arch PROPERTIES
                     ENVIRONMENT OMP_NUM_THREADS=1)
# activation recomputation ("block" against "none", bitwise; every
# architecture, bf16 and fp32): seconds, so in the quick set, and again with
# the grouped expert GEMMs
add_test(NAME emu_train_recompute COMMAND test_cuda_train_emu --only recompute)
add_test(NAME emu_train_offload COMMAND test_cuda_train_emu --only offload)
add_test(NAME emu_train_recompute_grouped ${FULL} COMMAND test_cuda_train_emu --only recompute
         --cuda.moe_grouped_gemm=true)
set_tests_properties(emu_train_recompute emu_train_offload emu_train_recompute_grouped PROPERTIES LABELS emu
                     ENVIRONMENT OMP_NUM_THREADS=1)
# again with blocks and threads in reverse order (CUEMU_ORDER=reverse): a
# result that depends on the order of blocks, or of threads between
# barriers, differs between the two runs: the groups whose kernels depend
# most on block and thread order (attention: the bf16 table's fused
# kernel; norms; moe; arch: the q/k norms' column sums), each held to the
# CPU tolerances and then compared bitwise with its forward run's digest
# (order_check.sh: the kernels claim determinism, docs/cuda.md), and the
# training steps
foreach(group ${order_groups})
  set(extra "")
  if(group STREQUAL "attention")
    set(extra --mode bf16 --long-t 300)
  endif()
  add_test(NAME emu_reverse_${group} ${FULL}
           COMMAND ${CMAKE_CURRENT_LIST_DIR}/order_check.sh ${cuemu_dir}/order-${group}-forward.txt
                   ${cuemu_dir}/order-${group}-reverse.txt $<TARGET_FILE:test_cuda_ops_emu>
                   --only ${group} ${extra})
  set_tests_properties(emu_reverse_${group} PROPERTIES FIXTURES_REQUIRED order_${group}
                       ENVIRONMENT "OMP_NUM_THREADS=1;CUEMU_BANK_CONFLICTS=fail")
endforeach()
# the training steps without the 50-step bf16 curves (--no-curves): the
# 3-step fp32 parity, ZeRO shards and fused-norm bits run every kernel there
add_test(NAME emu_reverse_train ${FULL} COMMAND test_cuda_train_emu --no-curves)
set_tests_properties(emu_reverse_train PROPERTIES ENVIRONMENT "OMP_NUM_THREADS=1;CUEMU_ORDER=reverse")
set_tests_properties(emu_reverse_attention emu_reverse_norms emu_reverse_moe emu_reverse_arch
                     emu_reverse_train PROPERTIES LABELS emu TIMEOUT 1200)
# bench_cuda's paths (--accum, --profile, the MoE global/micro restore, the
# opt-in kernels' lines) at one layer: a smoke run, not a benchmark
add_test(NAME emu_bench_smoke ${FULL} COMMAND ${CMAKE_CURRENT_LIST_DIR}/bench_smoke.sh
         $<TARGET_FILE:bench_cuda_emu>)
set_tests_properties(emu_bench_smoke PROPERTIES LABELS emu TIMEOUT 1200
                     ENVIRONMENT OMP_NUM_THREADS=1)
# `dapt train` on "cuda" against "cpu", and its exact resume (stage cli)
add_test(NAME emu_cli_train ${FULL} COMMAND ${CMAKE_SOURCE_DIR}/tests/cuda/cli_check.sh
         $<TARGET_FILE:dapt_emu> make)
set_tests_properties(emu_cli_train PROPERTIES ENVIRONMENT OMP_NUM_THREADS=1)
set_tests_properties(emu_train emu_train_moe_grouped emu_train_arch emu_cli_train PROPERTIES
                     LABELS emu TIMEOUT 1200)

# `dapt` itself on the emulated backend: `dapt train` with run.device = "cuda"
add_executable(dapt_emu ${CMAKE_SOURCE_DIR}/trainer/cli/main.c)
target_compile_definitions(dapt_emu PRIVATE DAPT_VERSION="${PROJECT_VERSION}-cuemu")
target_link_libraries(dapt_emu PRIVATE dapt_cuemu dapt_cli)
set_target_properties(dapt_emu PROPERTIES LINKER_LANGUAGE CXX)

# NCCL on the emulator (tests/cuemu/nccl_emu.c): libnccl_cuemu.so, loaded by
# dapt_emu through DAPT_NCCL_LIB, runs dist_nccl.c's collectives over MPI
# between emulated GPUs, one per process; it calls back into the emulator's
# streams (cuemu_stream_defer), which dapt_emu exports. Needs nccl.h (for
# dist_nccl.c too) and MPI.
if(DAPT_HAVE_CUDA AND DAPT_NCCL_INC AND DAPT_HAVE_MPI)
  add_library(nccl_cuemu SHARED ${CMAKE_CURRENT_LIST_DIR}/nccl_emu.c)
  target_include_directories(nccl_cuemu PRIVATE ${DAPT_NCCL_INC} ${CUDAToolkit_INCLUDE_DIRS})
  target_link_libraries(nccl_cuemu PRIVATE MPI::MPI_C)
  set_target_properties(dapt_emu PROPERTIES ENABLE_EXPORTS ON)
  add_dependencies(dapt_emu nccl_cuemu)
endif()
# without them the NCCL tests are registered as skipped (exit 77), saying why
set(nccl_modes one equal zero23 moe overlap watchdog)
if(NOT (TARGET nccl_cuemu AND MPIEXEC_EXECUTABLE))
  foreach(mode ${nccl_modes})
    add_test(NAME emu_nccl_${mode} ${FULL} COMMAND sh -c "echo 'skipped: the emulated NCCL \
needs the CUDA toolkit headers, nccl.h (DAPT_NCCL_INC) and MPI with mpiexec'; exit 77")
    set_tests_properties(emu_nccl_${mode} PROPERTIES LABELS emu SKIP_RETURN_CODE 77)
  endforeach()
endif()
if(TARGET nccl_cuemu AND MPIEXEC_EXECUTABLE)
  # the NCCL path at world size 1 (tools/gpu-check's stage nccl, here with
  # mpirun -np 1 too), then at 2 and 3 ranks (tests/cuemu/nccl_dist.sh)
  add_test(NAME emu_nccl_one ${FULL} COMMAND ${CMAKE_SOURCE_DIR}/tests/cuda/nccl_check.sh
           $<TARGET_FILE:dapt_emu> make $<TARGET_FILE:dapt_emu>)
  set_tests_properties(emu_nccl_one PROPERTIES LABELS emu TIMEOUT 600 ENVIRONMENT
                       "OMP_NUM_THREADS=1;DAPT_NCCL_LIB=$<TARGET_FILE:nccl_cuemu>")
  list(REMOVE_ITEM nccl_modes one)
  foreach(mode ${nccl_modes})
    add_test(NAME emu_nccl_${mode} ${FULL}
             COMMAND ${CMAKE_CURRENT_LIST_DIR}/nccl_dist.sh $<TARGET_FILE:dapt_emu>
                     $<TARGET_FILE:nccl_cuemu> ${DAPT_PYTHON} ${MPIEXEC_EXECUTABLE} ${mode})
    set_tests_properties(emu_nccl_${mode} PROPERTIES LABELS emu TIMEOUT 600)
  endforeach()
endif()
# the memory plan (trainer/plan.h) against the emulated device's allocations:
# one process a case (tests/cuemu/plan_emu.c)
add_executable(plan_emu ${CMAKE_CURRENT_LIST_DIR}/plan_emu.c)
target_link_libraries(plan_emu PRIVATE dapt_cuemu ${dapt_libs} ${MATH_LIB})
set_target_properties(plan_emu PROPERTIES LINKER_LANGUAGE CXX)
foreach(case llama gpt2 moe fp32)
  add_test(NAME emu_plan_${case} COMMAND plan_emu ${case})
  set_tests_properties(emu_plan_${case} PROPERTIES LABELS emu TIMEOUT 600 ENVIRONMENT OMP_NUM_THREADS=1)
endforeach()
