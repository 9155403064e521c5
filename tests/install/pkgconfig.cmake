# pkgconfig.cmake - use the Quark installed in PREFIX through pkg-config
# only: `pkg-config --cflags --libs quark` must work with PKG_CONFIG_PATH set
# to its pkgconfig directory, and a program compiled and linked with those
# flags must run; then once more statically (--static, libquark.a).
#
#   cmake -DPREFIX=<Quark prefix> -DLIBDIR=<lib> -DINCLUDEDIR=<include> -DBINDIR=<bin>
#         -DPKG_CONFIG=<pkg-config> -DC_COMPILER=<cc> -DSOURCE=<pkgconfig_check.c>
#         -DWORK_DIR=<scratch dir, emptied first> -DVERSION=<Quark version>
#         [-DC_FLAGS=<flags>] [-DEXE_LINKER_FLAGS=<flags>] -P pkgconfig.cmake
#
# The programs find libquark.so through -Wl,-rpath,<libdir> (from
# `pkg-config --variable=libdir quark`), as a user outside the system
# library directories would do (or set LD_LIBRARY_PATH).
cmake_minimum_required(VERSION 3.18)
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
quark_it_require(PREFIX LIBDIR INCLUDEDIR BINDIR PKG_CONFIG C_COMPILER SOURCE WORK_DIR VERSION)

file(REMOVE_RECURSE "${WORK_DIR}")
file(MAKE_DIRECTORY "${WORK_DIR}")

set(_pcdir "${PREFIX}/${LIBDIR}/pkgconfig")
if(DEFINED ENV{PKG_CONFIG_PATH} AND NOT "$ENV{PKG_CONFIG_PATH}" STREQUAL "")
  set(ENV{PKG_CONFIG_PATH} "${_pcdir}:$ENV{PKG_CONFIG_PATH}")
else()
  set(ENV{PKG_CONFIG_PATH} "${_pcdir}")
endif()
message(STATUS "PKG_CONFIG_PATH=$ENV{PKG_CONFIG_PATH}")

quark_it_run("pkg-config --modversion quark"
  COMMAND "${PKG_CONFIG}" --modversion quark OUTPUT_VARIABLE _version)
string(STRIP "${_version}" _version)
if(NOT _version STREQUAL VERSION)
  message(FATAL_ERROR "install test: pkg-config says quark ${_version}, expected ${VERSION}")
endif()

quark_it_run("pkg-config --cflags --libs quark"
  COMMAND "${PKG_CONFIG}" --cflags --libs quark OUTPUT_VARIABLE _flags)
string(STRIP "${_flags}" _flags)
message(STATUS "pkg-config --cflags --libs quark: ${_flags}")

# Its variables point into PREFIX.
function(_check_pc_var var want)
  quark_it_run("pkg-config --variable=${var} quark"
    COMMAND "${PKG_CONFIG}" --variable=${var} quark OUTPUT_VARIABLE _got)
  string(STRIP "${_got}" _got)
  get_filename_component(_got_real "${_got}" REALPATH)
  get_filename_component(_want_real "${want}" REALPATH)
  if(NOT EXISTS "${want}" OR NOT _got_real STREQUAL _want_real)
    message(FATAL_ERROR "install test: quark.pc's ${var} is '${_got}', expected '${want}' "
                        "(the installation in ${PREFIX})")
  endif()
  set(_pc_${var} "${_got}" PARENT_SCOPE)
endfunction()
_check_pc_var(libdir "${PREFIX}/${LIBDIR}")
_check_pc_var(includedir "${PREFIX}/${INCLUDEDIR}")
_check_pc_var(protoc_gen_quark "${PREFIX}/${BINDIR}/protoc-gen-quark")
set(_libdir "${_pc_libdir}")
foreach(_want "-I${_pc_includedir}" "-L${_libdir}" "-lquark")
  separate_arguments(_got_list UNIX_COMMAND "${_flags}")
  if(NOT _want IN_LIST _got_list)
    message(FATAL_ERROR "install test: `pkg-config --cflags --libs quark` gave '${_flags}', "
                        "which lacks ${_want}")
  endif()
endforeach()

separate_arguments(_cflags_list UNIX_COMMAND "${C_FLAGS}")
separate_arguments(_ldflags_list UNIX_COMMAND "${EXE_LINKER_FLAGS}")
set(_warn -std=c11 -Wall -Wextra -Werror)

# Shared: exactly the flags pkg-config gave.
separate_arguments(_pc_list UNIX_COMMAND "${_flags}")
set(_exe "${WORK_DIR}/pkgconfig_check")
quark_it_run("compile and link with pkg-config's flags"
  COMMAND "${C_COMPILER}" ${_warn} ${_cflags_list} -o "${_exe}" "${SOURCE}" ${_pc_list}
          ${_ldflags_list} "-Wl,-rpath,${_libdir}")
quark_it_run("run pkgconfig_check" COMMAND "${_exe}" TIMEOUT 60 OUTPUT_VARIABLE _out)
message("${_out}")
quark_it_expect_output("pkgconfig_check" "${_out}" "pkgconfig: ok")

# Static: --static adds Requires.private/Libs.private (libuv, pthread);
# libquark.a instead of -lquark, which would pick libquark.so.
quark_it_run("pkg-config --static --cflags --libs quark"
  COMMAND "${PKG_CONFIG}" --static --cflags --libs quark OUTPUT_VARIABLE _sflags)
string(STRIP "${_sflags}" _sflags)
message(STATUS "pkg-config --static --cflags --libs quark: ${_sflags}")
separate_arguments(_spc_list UNIX_COMMAND "${_sflags}")
list(TRANSFORM _spc_list REPLACE "^-lquark$" "${_libdir}/libquark.a")
set(_sexe "${WORK_DIR}/pkgconfig_check_static")
quark_it_run("compile and link statically with pkg-config --static's flags"
  COMMAND "${C_COMPILER}" ${_warn} ${_cflags_list} -o "${_sexe}" "${SOURCE}" ${_spc_list}
          ${_ldflags_list})
quark_it_not_needed("pkgconfig_check_static" "${_sexe}" "libquark\\.so")
quark_it_run("run pkgconfig_check_static" COMMAND "${_sexe}" TIMEOUT 60 OUTPUT_VARIABLE _out)
message("${_out}")
quark_it_expect_output("pkgconfig_check_static" "${_out}" "pkgconfig: ok")
