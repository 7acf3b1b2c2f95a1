#include "harness/trace_command.h"

#include <boost/program_options.hpp>
#include <chrono>
#include <cstdio>
#include <iomanip>

#include "common/input_error.h"
#include "harness/atomic_file.h"
#include "harness/cli.h"
#include "harness/trace_files.h"
#include "harness/trace_stats_report.h"
#include "workloads/trace_stats.h"
#include "workloads/workload_generator.h"

namespace tiermark {
namespace {

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;

// Parses `args` with `positional` names; throws InputError for anything unknown or malformed.
po::variables_map parse(const std::string& command, const po::options_description& options,
                        const po::positional_options_description& positional, const std::vector<std::string>& args) {
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
    if (vm.count("help") == 0) po::notify(vm);
  } catch (const po::error& e) {
    throw InputError(command + ": " + e.what());
  }
  return vm;
}

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

void print_written(std::ostream& out, const std::string& what, std::uint64_t events, const TraceFileWriter& writer,
                   double seconds) {
  out << what << ": wrote " << events << " events to " << writer.path() << " (" << writer.bytes_written() << " bytes, "
      << std::fixed << std::setprecision(2)
      << (events == 0 ? 0.0 : static_cast<double>(writer.bytes_written()) / static_cast<double>(events))
      << " bytes/event) in " << std::setprecision(3) << seconds << " s, " << std::setprecision(2)
      << (seconds > 0 ? static_cast<double>(events) / seconds / 1e6 : 0.0) << " M events/s\n";
  out.unsetf(std::ios::floatfield);
}

int gen(const std::vector<std::string>& args, std::ostream& out) {
  po::options_description options("tiermark trace gen SPEC -o FILE");
  options.add_options()("spec", po::value<std::string>()->required(), "workload GENERATOR[/PRESET][:key=value,...]")(
      "output,o", po::value<std::string>()->required(), "output trace: .csv (text) or .tmt (binary)")("help,h", "show this help");
  po::positional_options_description positional;
  positional.add("spec", 1);
  const po::variables_map vm = parse("trace gen", options, positional, args);
  if (vm.count("help") != 0) {
    out << "usage: tiermark trace gen SPEC -o FILE\n(`tiermark list` shows every generator, preset and option)\n" << options;
    return kExitOk;
  }
  resolve_workload(vm["spec"].as<std::string>());  // a bad spec fails before any file is created
  TraceFileWriter writer(vm["output"].as<std::string>());
  const Clock::time_point start = Clock::now();
  const std::uint64_t events = generate_workload(vm["spec"].as<std::string>(), writer);
  print_written(out, "trace gen", events, writer, seconds_since(start));
  return kExitOk;
}

int convert(const std::vector<std::string>& args, std::ostream& out) {
  po::options_description options("tiermark trace convert IN -o OUT [--from FORMAT]");
  options.add_options()("input", po::value<std::string>()->required(), "input trace or log")(
      "output,o", po::value<std::string>()->required(), "output trace: .csv (text) or .tmt (binary)")(
      "from", po::value<std::string>()->default_value("auto"), "input format: auto, csv, tmt or rmm (RAPIDS RMM logging_resource_adaptor CSV)")(
      "help,h", "show this help");
  po::positional_options_description positional;
  positional.add("input", 1);
  const po::variables_map vm = parse("trace convert", options, positional, args);
  if (vm.count("help") != 0) {
    out << "usage: tiermark trace convert IN -o OUT [--from auto|csv|tmt|rmm]\n" << options;
    return kExitOk;
  }
  TraceFile input(vm["input"].as<std::string>(), parse_trace_format(vm["from"].as<std::string>()));
  TraceFileWriter writer(vm["output"].as<std::string>());
  const Clock::time_point start = Clock::now();
  const std::uint64_t events = pump(input.source(), writer);
  print_written(out, "trace convert", events, writer, seconds_since(start));
  return kExitOk;
}

int stats(const std::vector<std::string>& args, std::ostream& out) {
  po::options_description options("tiermark trace stats FILE [--json] [--top N]");
  options.add_options()("input", po::value<std::string>()->required(), "trace file (.csv, .tmt or an RMM log)")(
      "json", "print JSON (schema tiermark-trace-stats/1) instead of the summary")(
      "output,o", po::value<std::string>(), "also write the JSON to this file (atomically)")(
      "top", po::value<unsigned>()->default_value(10), "how many tags to list by bytes")(
      "from", po::value<std::string>()->default_value("auto"), "input format: auto, csv, tmt or rmm")("help,h", "show this help");
  po::positional_options_description positional;
  positional.add("input", 1);
  const po::variables_map vm = parse("trace stats", options, positional, args);
  if (vm.count("help") != 0) {
    out << "usage: tiermark trace stats FILE [--json] [--top N] [-o FILE.json]\n" << options;
    return kExitOk;
  }
  const std::string path = vm["input"].as<std::string>();
  TraceFile input(path, parse_trace_format(vm["from"].as<std::string>()));
  std::unique_ptr<AtomicFile> json_file;
  if (vm.count("output") != 0) json_file = std::make_unique<AtomicFile>(vm["output"].as<std::string>());
  TraceStats trace_stats;
  pump(input.source(), trace_stats);
  const nlohmann::ordered_json report = trace_stats_json(trace_stats, path, vm["top"].as<unsigned>());
  if (json_file) {
    json_file->stream() << report.dump(2) << "\n";
    json_file->commit();
  }
  if (vm.count("json") != 0) {
    out << report.dump(2) << "\n";
  } else {
    print_trace_stats(out, report);
  }
  return kExitOk;
}

}  // namespace

int trace_command(const std::vector<std::string>& args, std::ostream& out) {
  const std::string usage =
      "usage: tiermark trace gen SPEC -o FILE | convert IN -o OUT [--from rmm] | stats FILE [--json]\n";
  if (args.empty()) throw InputError("trace: missing subcommand (gen, convert or stats; see `tiermark trace --help`)");
  const std::string& sub = args.front();
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "gen") return gen(rest, out);
  if (sub == "convert") return convert(rest, out);
  if (sub == "stats") return stats(rest, out);
  if (sub == "--help" || sub == "-h") {
    out << usage;
    return kExitOk;
  }
  throw InputError("trace: unknown subcommand '" + sub + "' (known: gen, convert, stats)");
}

}  // namespace tiermark
