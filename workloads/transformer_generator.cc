#include "workloads/transformer_generator.h"

namespace tiermark {

const GeneratorInfo& transformer_generator() {
  static const GeneratorInfo kInfo = {"transformer", "(being written)", {}, {}, [](const Options&, TraceBuilder&) {}};
  return kInfo;
}

}  // namespace tiermark
