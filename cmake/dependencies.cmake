# Every dependency is a Debian package found the standard way (tools/install-deps.sh installs them);
# nothing is vendored or downloaded at build time.
find_package(Threads REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(HWLOC REQUIRED IMPORTED_TARGET hwloc)
find_package(Boost 1.74 CONFIG REQUIRED COMPONENTS program_options)
find_package(nlohmann_json 3.10 REQUIRED)
if(TIERMARK_BUILD_BENCHMARKS OR TIERMARK_BUILD_TESTS)
  find_package(benchmark REQUIRED)
endif()
if(TIERMARK_BUILD_TESTS)
  find_package(GTest REQUIRED)
  include(GoogleTest)
endif()
