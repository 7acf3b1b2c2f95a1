// The `cnn` workload generator: the device allocations and frees of an eager framework (PyTorch with
// cuDNN) training or running inference on ResNet-50 or VGG-16 in torchvision's layout. Presets
// `resnet50` and `vgg16`; every option and the model of what is allocated when are documented in
// docs/workload-cnn.md. Invariants: the trace is deterministic for a given spec, every block it
// allocates is freed by the end of its `teardown` phase, and model facts (parameter count,
// convolutions, conv output bytes per sample) are in its metadata before the first event.
#pragma once

#include "workloads/workload_generator.h"

namespace tiermark {

const GeneratorInfo& cnn_generator();

}  // namespace tiermark
