//===- RoutingTrace.cpp ---------------------------------------------------------===//

#include "runtime/sched/RoutingTrace.h"
