// Placeholder until this test is written (traces issue).
#include <gtest/gtest.h>
