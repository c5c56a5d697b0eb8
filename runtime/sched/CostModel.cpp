//===- CostModel.cpp ---------------------------------------------------------===//

#include "runtime/sched/CostModel.h"
