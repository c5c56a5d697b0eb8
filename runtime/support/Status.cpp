//===- Status.cpp ---------------------------------------------------------===//
#include "runtime/support/Status.h"
