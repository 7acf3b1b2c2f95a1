// Spec: how a user names a configured component anywhere in tiermark, `NAME[/PRESET][:key=value,...]`,
// for example `buddy:min_block=512,arena=64GiB` or `transformer/gpt2-small:b=8`. The name may hold dots
// (`pool.fixed`); a value may hold commas inside [brackets]. Parsing is syntax only: which keys and
// values are valid is the component's business (see options.h).
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tiermark {

struct Spec {
  std::string name;
  std::string preset;  // empty when none was given
  std::vector<std::pair<std::string, std::string>> settings;  // in the order written
};

// Throws InputError naming the spec and the problem (empty name, `key` without `=`, repeated key).
Spec parse_spec(std::string_view text);

// Splits a comma list of specs (`buddy:min_block=256,arena=1GiB,pool.fixed`) into specs. A piece
// without `=` after the first spec starts a new spec; a `key=value` piece belongs to the spec before it.
std::vector<std::string> split_spec_list(std::string_view text);

// Splits `text` on the commas that are not inside [brackets] (nested brackets count).
std::vector<std::string_view> split_top_level(std::string_view text);

}  // namespace tiermark
