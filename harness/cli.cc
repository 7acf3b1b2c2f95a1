#include "harness/cli.h"

#include <boost/program_options.hpp>
#include <functional>
#include <string>
#include <vector>

#include "common/input_error.h"
#include "harness/capacity_command.h"
#include "harness/catalog_report.h"
#include "harness/command_options.h"
#include "harness/replay_command.h"
#include "harness/stress_command.h"
#include "harness/system_malloc_runner.h"
#include "harness/tiers_command.h"
#include "harness/trace_command.h"

namespace tiermark {
namespace {

namespace po = boost::program_options;

struct Command {
  std::string name;
  std::string summary;
  std::function<int(const std::vector<std::string>&, std::ostream&)> run;
  bool hidden = false;  // internal: run by tiermark itself, not listed in the usage
};

int list_command(const std::vector<std::string>& args, std::ostream& out) {
  po::options_description options("tiermark list");
  options.add_options()("json", "print JSON: {\"allocators\": [...], \"memory_sources\": [...], \"workloads\": [...], \"test_allocators\": [...]}")("help,h", "show this help");
  const po::variables_map vm = parse_command_options("list", options, args);
  if (vm.count("help") != 0) {
    out << "usage: tiermark list [--json]\n" << options;
  } else if (vm.count("json") != 0) {
    out << catalog_json().dump(2) << "\n";
  } else {
    print_catalog(out);
  }
  return kExitOk;
}

const std::vector<Command>& commands() {
  static const std::vector<Command> kCommands = {
      {"list", "list every allocator, memory source and workload generator with its options and defaults", list_command},
      {"trace", "generate (gen), convert and inspect (stats) allocation traces", trace_command},
      {"replay", "replay a workload or trace against allocators: throughput, latency, fragmentation", replay_command},
      {"capacity", "find the smallest device capacity at which a workload replays with no failed request", capacity_command},
      {"stress", "multi-threaded stress of allocators: random churn or mimalloc-bench kernels, verified blocks, OOM storms, soak growth gate", stress_command},
      {"tiers", "bandwidth and latency of each memory tier: L1, L2, L3, DRAM and NUMA nodes", tiers_command},
      {"replay-child", "internal: one pass of a system.* replay row in its own process", replay_child_command, true},
      {"stress-child", "internal: a system.* stress row in its own process", stress_child_command, true},
  };
  return kCommands;
}

void print_usage(std::ostream& out) {
  out << "usage: tiermark <command> [options]\n\ncommands:\n";
  for (const Command& command : commands()) {
    if (!command.hidden) out << "  " << command.name << "  " << command.summary << "\n";
  }
  out << "\n`tiermark <command> --help` describes a command. Exit codes: 0 ok, 1 run failed, 2 bad input.\n";
}

}  // namespace

int run_cli(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty()) {
    print_usage(err);
    return kExitBadInput;
  }
  const std::string name = args.front();
  if (name == "--help" || name == "-h" || name == "help") {
    print_usage(out);
    return kExitOk;
  }
  if (name == "--version") {
    out << "tiermark " << TIERMARK_VERSION << "\n";
    return kExitOk;
  }
  for (const Command& command : commands()) {
    if (command.name != name) continue;
    try {
      return command.run(std::vector<std::string>(args.begin() + 1, args.end()), out);
    } catch (const InputError& e) {
      err << "tiermark: " << e.what() << "\n";
      return kExitBadInput;
    } catch (const std::exception& e) {
      err << "tiermark " << name << ": failed: " << e.what() << "\n";
      return kExitFailure;
    }
  }
  err << "tiermark: unknown command '" << name << "' (run `tiermark --help` for the list)\n";
  return kExitBadInput;
}

}  // namespace tiermark
