// Byte sizes as users write them: "512", "4KiB", "64MiB", "80GiB", "1.5GiB", "2MB".
// Binary units (K, KiB, M, MiB, ...) are powers of 1024; decimal units (KB, MB, GB, TB) powers
// of 1000, as in IEC 80000-13. Parsing rejects negatives, fractions of a byte and overflow.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace tiermark {

// The size in bytes, or nullopt when `text` is not a valid size (the caller names the context).
std::optional<std::uint64_t> parse_size(std::string_view text);

// Shortest exact form with a binary unit when the size is a whole multiple of one: 65536 -> "64KiB",
// 1000 -> "1000B". parse_size(format_size(n)) == n for every n.
std::string format_size(std::uint64_t bytes);

// Three significant digits for people reading a report: 3090289808 -> "2.88 GiB", 512 -> "512 B".
std::string format_size_approx(std::uint64_t bytes);

}  // namespace tiermark
