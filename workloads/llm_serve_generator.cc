#include "workloads/llm_serve_generator.h"

namespace tiermark {

const GeneratorInfo& llm_serve_generator() {
  static const GeneratorInfo kInfo = {"llm-serve", "(being written)", {}, {}, [](const Options&, TraceBuilder&) {}};
  return kInfo;
}

}  // namespace tiermark
