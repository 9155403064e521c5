# install.cmake - install the Quark build tree BUILD_DIR into PREFIX (from
# scratch) and check that the expected files are there.
#
#   cmake -DBUILD_DIR=<quark build> -DPREFIX=<dir> -DCONFIG=<build type>
#         -DLIBDIR=<lib> -DINCLUDEDIR=<include> -DBINDIR=<bin> -P install.cmake
cmake_minimum_required(VERSION 3.18)
include(${CMAKE_CURRENT_LIST_DIR}/common.cmake)
quark_it_require(BUILD_DIR PREFIX LIBDIR INCLUDEDIR BINDIR)

file(REMOVE_RECURSE "${PREFIX}")
set(_config)
if(CONFIG)
  set(_config --config "${CONFIG}")
endif()
quark_it_run("cmake --install"
  COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" ${_config})

foreach(_file
    "${INCLUDEDIR}/quark/quark.h"
    "${BINDIR}/protoc-gen-quark"
    "${LIBDIR}/libquark.so"
    "${LIBDIR}/libquark.a"
    "${LIBDIR}/cmake/Quark/QuarkConfig.cmake"
    "${LIBDIR}/cmake/Quark/QuarkConfigVersion.cmake"
    "${LIBDIR}/cmake/Quark/QuarkTargets.cmake"
    "${LIBDIR}/cmake/Quark/QuarkGenerate.cmake"
    "${LIBDIR}/pkgconfig/quark.pc")
  if(NOT EXISTS "${PREFIX}/${_file}")
    message(FATAL_ERROR "install test: cmake --install did not install ${_file} into ${PREFIX}")
  endif()
endforeach()

# quark.pc must name the prefix it was installed to, not CMAKE_INSTALL_PREFIX.
file(STRINGS "${PREFIX}/${LIBDIR}/pkgconfig/quark.pc" _prefix_line REGEX "^prefix=")
if(NOT _prefix_line STREQUAL "prefix=${PREFIX}")
  message(FATAL_ERROR "install test: ${PREFIX}/${LIBDIR}/pkgconfig/quark.pc says "
                      "'${_prefix_line}', expected 'prefix=${PREFIX}'")
endif()
message(STATUS "Quark installed into ${PREFIX}")
