//===- Placement.cpp ------------------------------------------------------===//
#include "runtime/plan/Placement.h"
