#include "allocators/broken_overlap_allocator.h"

#include <vector>

namespace tiermark {
namespace {

const std::vector<OptionSpec> kBrokenOverlapOptions = {
    {"every", OptionType::kCount, "1000", "one request in this many gets a block overlapping a live one (at least 1)"},
};

Options inner_options() { return Options(std::string(BumpAllocator::kName), BumpAllocator::option_specs(), {}); }

}  // namespace

std::span<const OptionSpec> BrokenOverlapAllocator::option_specs() { return kBrokenOverlapOptions; }

BrokenOverlapAllocator::BrokenOverlapAllocator(const Options& options, Upstream& upstream)
    : inner_(inner_options(), upstream), every_(options.count("every")) {
  if (every_ == 0) options.reject("every", "must be at least 1");
}

void* BrokenOverlapAllocator::allocate(std::size_t size, std::size_t alignment, StreamId stream) noexcept {
  if (++requests_ % every_ == 0) due_ = true;
  if (due_ && latest_ != nullptr) {
    Host& host = hosts_.at(latest_);
    if (host.size >= size && address_of(latest_) % alignment == 0) {
      due_ = false;
      ++host.planted_live;
      ++planted_;
      return latest_;
    }
  }
  void* p = inner_.allocate(size, alignment, stream);
  if (p != nullptr) {
    hosts_.insert_or_assign(p, Host{size, alignment, true, 0});
    latest_ = p;
  }
  return p;
}

void BrokenOverlapAllocator::deallocate(void* p, std::size_t /*size*/, std::size_t /*alignment*/, StreamId stream) noexcept {
  const auto it = hosts_.find(p);
  if (it == hosts_.end()) return;  // not ours: a caller's bug, which this allocator does not model
  Host& host = it->second;
  // A planted block and its host start at the same address: which of them this call frees does not
  // matter, only that the memory stays allocated until both are gone.
  if (host.planted_live != 0) {
    --host.planted_live;
    ++planted_freed_;
  } else {
    host.live = false;
  }
  if (host.live || host.planted_live != 0) return;
  inner_.deallocate(p, host.size, host.alignment, stream);
  if (latest_ == p) latest_ = nullptr;
  hosts_.erase(it);
}

AllocatorStats BrokenOverlapAllocator::stats() const {
  AllocatorStats s = inner_.stats();
  s.allocs += planted_;
  s.frees += planted_freed_;
  return s;
}

std::string BrokenOverlapAllocator::check_invariants() const {
  std::uint64_t planted_live = 0;
  for (const auto& [p, host] : hosts_) {
    if (!host.live && host.planted_live == 0) return "a host block with nothing live on it was kept";
    planted_live += host.planted_live;
  }
  if (planted_live != planted_ - planted_freed_) return "planted blocks do not add up";
  return inner_.check_invariants();
}

}  // namespace tiermark
