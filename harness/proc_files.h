// Sizes the kernel reports in /proc: the one reader of "<key>: <n> kB" fields (/proc/meminfo,
// /proc/self/status), and the host's available memory every command sizes its work by.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace tiermark {

// The value of "<key>: <n> kB" in a /proc file, in bytes (the kernel's "kB" is KiB); nullopt when the
// file or the key is missing.
std::optional<std::uint64_t> proc_kib_field(const char* path, std::string_view key);

// MemAvailable from /proc/meminfo: what can be allocated without swapping, page cache included
// (unlike sysconf(_SC_AVPHYS_PAGES), which is MemFree only and reads low on a machine with a warm
// page cache).
std::optional<std::uint64_t> available_memory_bytes();

}  // namespace tiermark
