# Warning flags shared by every tiermark target: tiermark_warnings is linked PRIVATE so that
# the flags apply to our own sources only, never to the Debian packages' headers.
add_library(tiermark_warnings INTERFACE)
target_compile_options(tiermark_warnings INTERFACE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor)
if(TIERMARK_WERROR)
  target_compile_options(tiermark_warnings INTERFACE -Werror)
endif()
