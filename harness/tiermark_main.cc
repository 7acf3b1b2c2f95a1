// Entry point of the `tiermark` command-line tool; everything else lives in cli.cc.
#include <iostream>

#include "harness/cli.h"

int main(int argc, char** argv) { return tiermark::run_cli(argc, argv, std::cout, std::cerr); }
