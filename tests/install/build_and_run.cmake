# build_and_run.cmake - configure and build a CMake project against the Quark
# installed in PREFIX, the way a user would (find_package(Quark) through
# CMAKE_PREFIX_PATH), then run one of its programs and check its output.
#
#   cmake -DSOURCE_DIR=<project> -DWORK_DIR=<scratch dir, emptied first>
#         -DPREFIX=<Quark prefix> -DLIBDIR=<lib dir under PREFIX>
#         -DEXECUTABLE=<program name> -DEXPECT=<regex its output must match>
#         [-DGENERATOR=<cmake generator>] [-DC_COMPILER=<cc>] [-DBUILD_TYPE=<type>]
#         [-DC_FLAGS=<flags>] [-DEXE_LINKER_FLAGS=<flags>] [-DSTATIC=ON]
#         -P build_and_run.cmake
#
# The program runs without LD_LIBRARY_PATH: it finds libquark.so through the
# RPATH CMake gives programs linked against libraries outside system dirs.
cmake_minimum_required(VERSION 3.18)
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
quark_it_require(SOURCE_DIR WORK_DIR PREFIX LIBDIR EXECUTABLE EXPECT)

set(_build "${WORK_DIR}/build")
file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

set(_args -S "${SOURCE_DIR}" -B "${_build}" "-DCMAKE_PREFIX_PATH=${PREFIX}")
if(GENERATOR)
  list(APPEND _args -G "${GENERATOR}")
endif()
if(C_COMPILER)
  list(APPEND _args "-DCMAKE_C_COMPILER=${C_COMPILER}")
endif()
if(BUILD_TYPE)
  list(APPEND _args "-DCMAKE_BUILD_TYPE=${BUILD_TYPE}")
endif()
if(C_FLAGS)
  list(APPEND _args "-DCMAKE_C_FLAGS=${C_FLAGS}")
endif()
if(EXE_LINKER_FLAGS)
  list(APPEND _args "-DCMAKE_EXE_LINKER_FLAGS=${EXE_LINKER_FLAGS}")
endif()
quark_it_run("configure ${SOURCE_DIR}" COMMAND "${CMAKE_COMMAND}" ${_args} TIMEOUT 120)

# It must have used the Quark of PREFIX, not another installation.
file(STRINGS "${_build}/CMakeCache.txt" _quark_dir REGEX "^Quark_DIR:")
string(REGEX REPLACE "^Quark_DIR:[A-Z]*=" "" _quark_dir "${_quark_dir}")
get_filename_component(_quark_dir "${_quark_dir}" REALPATH)
get_filename_component(_want_dir "${PREFIX}/${LIBDIR}/cmake/Quark" REALPATH)
if(NOT _quark_dir STREQUAL _want_dir)
  message(FATAL_ERROR "install test: find_package(Quark) found '${_quark_dir}', "
                      "expected the installation in '${_want_dir}'")
endif()

set(_config)
if(BUILD_TYPE)
  set(_config --config "${BUILD_TYPE}")
endif()
quark_it_run("build ${SOURCE_DIR}"
  COMMAND "${CMAKE_COMMAND}" --build "${_build}" --parallel 2 ${_config})

set(_exe "${_build}/${EXECUTABLE}")
if(NOT EXISTS "${_exe}" AND BUILD_TYPE AND EXISTS "${_build}/${BUILD_TYPE}/${EXECUTABLE}")
  set(_exe "${_build}/${BUILD_TYPE}/${EXECUTABLE}") # a multi-config generator
endif()
if(NOT EXISTS "${_exe}")
  message(FATAL_ERROR "install test: the build of ${SOURCE_DIR} produced no ${EXECUTABLE} in ${_build}")
endif()
if(STATIC)
  quark_it_not_needed("${EXECUTABLE}" "${_exe}" "libquark\\.so")
endif()

quark_it_run("run ${EXECUTABLE}" COMMAND "${_exe}" TIMEOUT 60 OUTPUT_VARIABLE _out)
message("${_out}")
quark_it_expect_output("${EXECUTABLE}" "${_out}" "${EXPECT}")
