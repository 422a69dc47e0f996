# phimoe_rt_flags.cmake - build a directory with plain compiler flags, without what LLVM's
# HandleLLVMOptions added to the parent project (flags, definitions, include paths).
#
# phimoe_rt_plain_flags() is a macro: call it at the top of a CMakeLists.txt; it resets that
# directory's inherited properties and restores the CMAKE_<LANG>_FLAGS* and linker flag
# variables to their cache values (what the user configured), dropping LLVM's additions.
# phimoe_rt_target_options(target) adds the runtime's own options (C++17, -O3, warnings,
# -march=${PHIMOE_RT_MARCH} when that cache variable is set, e.g. to "native", and
# ASan/UBSan under the project's PHIMOE_ENABLE_SANITIZERS).
macro(phimoe_rt_plain_flags)
  set_property(DIRECTORY PROPERTY COMPILE_OPTIONS "")
  set_property(DIRECTORY PROPERTY COMPILE_DEFINITIONS "")
  set_property(DIRECTORY PROPERTY INCLUDE_DIRECTORIES "")
  set_property(DIRECTORY PROPERTY LINK_OPTIONS "")
  foreach(_phimoe_rt_var CMAKE_C_FLAGS CMAKE_CXX_FLAGS CMAKE_EXE_LINKER_FLAGS
          CMAKE_SHARED_LINKER_FLAGS CMAKE_MODULE_LINKER_FLAGS CMAKE_STATIC_LINKER_FLAGS)
    set(${_phimoe_rt_var} "$CACHE{${_phimoe_rt_var}}")
    foreach(_phimoe_rt_config DEBUG RELEASE RELWITHDEBINFO MINSIZEREL)
      set(${_phimoe_rt_var}_${_phimoe_rt_config} "$CACHE{${_phimoe_rt_var}_${_phimoe_rt_config}}")
    endforeach()
  endforeach()
endmacro()

set(PHIMOE_RT_MARCH "" CACHE STRING
    "-march for the runtime and its tests (e.g. native); empty: the compiler's default")

function(phimoe_rt_target_options target)
  target_compile_features(${target} PUBLIC cxx_std_17)
  set_target_properties(${target} PROPERTIES CXX_EXTENSIONS OFF)
  target_compile_options(${target} PRIVATE -O3 -Wall -Wextra)
  if(PHIMOE_RT_MARCH)
    target_compile_options(${target} PRIVATE -march=${PHIMOE_RT_MARCH})
  endif()
  if(PHIMOE_ENABLE_SANITIZERS)
    target_compile_options(${target} PRIVATE -fsanitize=address,undefined -fno-omit-frame-pointer)
    target_link_options(${target} PRIVATE -fsanitize=address,undefined)
  endif()
endfunction()
