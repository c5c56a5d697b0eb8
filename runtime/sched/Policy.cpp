//===- Policy.cpp ---------------------------------------------------------===//

#include "runtime/sched/Policy.h"
