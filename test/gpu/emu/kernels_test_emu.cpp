// kernels_test_emu.cpp - test/gpu/kernels_test.cu compiled as C++ on the CUDA emulation
// (built with -include phimoe_emu/simt.h -DPHIMOE_CUDA_EMU: test/gpu/emu/CMakeLists.txt).
#include "../kernels_test.cu"
