//===- Monitor.cpp ---------------------------------------------------------===//

#include "runtime/sched/Monitor.h"
