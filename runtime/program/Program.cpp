//===- Program.cpp --------------------------------------------------------===//
#include "runtime/schema/program_generated.h"
