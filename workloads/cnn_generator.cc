#include "workloads/cnn_generator.h"

namespace tiermark {

const GeneratorInfo& cnn_generator() {
  static const GeneratorInfo kInfo = {"cnn", "(being written)", {}, {}, [](const Options&, TraceBuilder&) {}};
  return kInfo;
}

}  // namespace tiermark
