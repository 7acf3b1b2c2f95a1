#include "harness/trace_command.h"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iomanip>
#include <sstream>
#include <string>

#include "common/input_error.h"
#include "common/size_units.h"
#include "harness/atomic_file.h"
#include "harness/cli.h"
#include "harness/command_options.h"
#include "harness/trace_files.h"
#include "harness/trace_stats_report.h"
#include "workloads/trace_stats.h"
#include "workloads/workload_generator.h"

namespace tiermark {
namespace {

namespace po = boost::program_options;
using Clock = std::chrono::steady_clock;

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
  const po::variables_map vm = parse_command_options("trace gen", options, args, positional);
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
  const po::variables_map vm = parse_command_options("trace convert", options, args, positional);
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
  const po::variables_map vm = parse_command_options("trace stats", options, args, positional);
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

// libtiermark_capture.so: --lib, else $TIERMARK_CAPTURE_LIB, else next to this executable, where
// the build puts both.
std::string capture_library(const po::variables_map& vm) {
  std::string path;
  if (vm.count("lib") != 0) {
    path = vm["lib"].as<std::string>();
  } else if (const char* env = std::getenv("TIERMARK_CAPTURE_LIB"); env != nullptr && *env != '\0') {
    path = env;
  } else {
    std::error_code error;
    const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
    path = (self.parent_path() / "libtiermark_capture.so").string();
  }
  if (!std::filesystem::is_regular_file(path)) {
    throw InputError("trace capture: " + path + ": capture library not found (build the tiermark_capture target, or pass --lib)");
  }
  return std::filesystem::absolute(path).string();
}

// Refuses a command that cannot be started (as execvp would look for it), before any file is touched:
// exit 2 with one line, like every other bad input.
void check_runnable(const std::string& program) {
  const auto runnable = [](const std::filesystem::path& p) {
    std::error_code error;
    return std::filesystem::is_regular_file(p, error) && ::access(p.c_str(), X_OK) == 0;
  };
  if (program.find('/') != std::string::npos) {
    if (!runnable(program)) {
      throw InputError("trace capture: cannot run '" + program + "': " +
                       (std::filesystem::exists(program) ? "not an executable file" : "no such file"));
    }
    return;
  }
  const char* path = std::getenv("PATH");
  std::stringstream directories(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin");
  for (std::string directory; std::getline(directories, directory, ':');) {
    if (runnable(std::filesystem::path(directory.empty() ? "." : directory) / program)) return;
  }
  throw InputError("trace capture: cannot run '" + program + "': not found on PATH");
}

// Runs `command` with the capture library preloaded; returns its exit status as a shell reports it
// (128 + signal number when a signal ended it).
int run_captured(const std::vector<std::string>& command, const std::string& library, const std::string& output) {
  const pid_t child = ::fork();
  if (child < 0) throw std::runtime_error(std::string("fork failed: ") + std::strerror(errno));
  if (child == 0) {
    const char* preload = std::getenv("LD_PRELOAD");
    const std::string preloads = preload != nullptr && *preload != '\0' ? library + ":" + preload : library;
    ::setenv("LD_PRELOAD", preloads.c_str(), 1);
    ::setenv("TIERMARK_CAPTURE_OUTPUT", output.c_str(), 1);
    ::unsetenv("TIERMARK_CAPTURE_ROOT_PID");  // the command is the root process of this capture
    std::vector<char*> argv;
    for (const std::string& arg : command) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "tiermark: trace capture: cannot run '%s': %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(child, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error(std::string("waitpid failed: ") + std::strerror(errno));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int capture(const std::vector<std::string>& args, std::ostream& out) {
  // Everything after `--` is the command, passed through untouched.
  const auto separator = std::find(args.begin(), args.end(), "--");
  const std::vector<std::string> own(args.begin(), separator);
  const std::vector<std::string> command(separator == args.end() ? args.end() : separator + 1, args.end());
  po::options_description options("tiermark trace capture -o FILE.tmt [--lib PATH] -- COMMAND [ARGS...]");
  options.add_options()("output,o", po::value<std::string>()->required(), "the trace of COMMAND's process (.tmt); its child processes write FILE.tmt.<pid>")(
      "lib", po::value<std::string>(), "libtiermark_capture.so to preload (default: $TIERMARK_CAPTURE_LIB, else next to tiermark)")(
      "help,h", "show this help");
  const po::variables_map vm = parse_command_options("trace capture", options, own, po::positional_options_description());
  if (vm.count("help") != 0) {
    out << "usage: tiermark trace capture -o FILE.tmt [--lib PATH] -- COMMAND [ARGS...]\n"
        << "Runs COMMAND with every malloc, free and new/delete recorded (docs/capture.md); exits with COMMAND's status.\n"
        << options;
    return kExitOk;
  }
  if (command.empty()) throw InputError("trace capture: no command (put it after --: tiermark trace capture -o out.tmt -- ./app)");
  const std::string output = vm["output"].as<std::string>();
  if (output.size() < 4 || output.substr(output.size() - 4) != ".tmt") {
    throw InputError("trace capture: " + output + ": the capture writes the binary format; name the output .tmt (convert it afterwards)");
  }
  const std::string library = capture_library(vm);
  check_runnable(command.front());
  const std::string absolute_output = std::filesystem::absolute(output).string();
  std::error_code ignored;
  std::filesystem::remove(absolute_output, ignored);  // so a command that never exits normally leaves no stale trace
  const auto started = std::filesystem::file_time_type::clock::now();
  const int status = run_captured(command, library, absolute_output);
  if (!std::filesystem::exists(absolute_output)) {
    if (status == 127) return status;  // the command could not be run; the child said why
    throw std::runtime_error("no trace written to " + output + " (command exit status " + std::to_string(status) +
                             "; a process ended by a signal, _exit or exec writes none: see docs/capture.md)");
  }
  TraceFile trace(absolute_output);
  TraceStats stats;
  pump(trace.source(), stats);
  out << "trace capture: " << command.front() << " exited with status " << status << "; " << output << " holds "
      << stats.events << " events (" << stats.allocs << " allocs, " << stats.frees << " frees, " << stats.threads
      << " threads), peak live " << format_size_approx(stats.peak_live_bytes) << "\n";
  // Child processes (a compiler driver's cc1plus, a shell's commands) write OUTPUT.<pid>.
  const std::filesystem::path root(absolute_output);
  for (const auto& entry : std::filesystem::directory_iterator(root.parent_path())) {
    const std::string name = entry.path().filename().string();
    const std::string prefix = root.filename().string() + ".";
    if (name.size() > prefix.size() && name.starts_with(prefix) &&
        name.find_first_not_of("0123456789", prefix.size()) == std::string::npos && entry.last_write_time() >= started) {
      out << "  and a child process's trace: " << (root.parent_path() / name).string() << "\n";
    }
  }
  return status;
}

}  // namespace

int trace_command(const std::vector<std::string>& args, std::ostream& out) {
  const std::string usage =
      "usage: tiermark trace gen SPEC -o FILE | convert IN -o OUT [--from rmm] | stats FILE [--json]\n"
      "       tiermark trace capture -o FILE.tmt -- COMMAND [ARGS...]\n";
  if (args.empty()) throw InputError("trace: missing subcommand (gen, convert, stats or capture; see `tiermark trace --help`)");
  const std::string& sub = args.front();
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (sub == "gen") return gen(rest, out);
  if (sub == "convert") return convert(rest, out);
  if (sub == "stats") return stats(rest, out);
  if (sub == "capture") return capture(rest, out);
  if (sub == "--help" || sub == "-h") {
    out << usage;
    return kExitOk;
  }
  throw InputError("trace: unknown subcommand '" + sub + "' (known: gen, convert, stats, capture)");
}

}  // namespace tiermark
