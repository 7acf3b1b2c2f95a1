#include "workloads/trace_stream.h"

#include "common/input_error.h"
#include "workloads/trace_validator.h"

namespace tiermark {

std::uint64_t pump(TraceSource& source, TraceSink& sink) {
  TraceValidator validator;
  sink.begin(source.metadata(), source.tags());
  TraceEvent event;
  while (source.next(event)) {
    if (std::string problem = validator.check(event, source.tags().size()); !problem.empty()) {
      throw InputError(source.source_name() + ": " + source.position() + ": " + problem);
    }
    sink.event(event);
  }
  sink.end();
  return validator.events();
}

}  // namespace tiermark
