//===- BufferReuse.cpp - liveness-based arena planning for exec -----------===//
//
// Persistent buffers get their own space at the start of the arena; every
// other buffer is live from the first to the last instruction touching it
// (or a view of it) and shares space with buffers whose live ranges do not
// overlap. Placement is greedy best fit, largest buffer first.
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Dialect/Exec/ExecOps.h"
#include "flexmoe/Passes/Passes.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/MapVector.h"

#include <algorithm>

namespace flexmoe {
#define GEN_PASS_DEF_BUFFERREUSE
#include "flexmoe/Passes/Passes.h.inc"
} // namespace flexmoe

using namespace mlir;
using namespace flexmoe;
using flexmoe::exec::BufferKind;

namespace {

constexpr int64_t kAlignment = 64;

int64_t alignUp(int64_t value) {
  return (value + kAlignment - 1) / kAlignment * kAlignment;
}

struct Interval {
  exec::BufferOp buffer;
  int64_t size;   // aligned
  unsigned first; // instruction indices, inclusive
  unsigned last;
  int64_t offset = -1;
};

/// The exec.buffer behind a buffer value (through a view).
exec::BufferOp rootBuffer(Value value) {
  if (auto view = value.getDefiningOp<exec::ViewOp>())
    value = view.getSource();
  return value.getDefiningOp<exec::BufferOp>();
}

/// Places `item` at the offset of the smallest gap between the already
/// placed, simultaneously live buffers that holds it; past the last one if
/// no gap does.
int64_t bestFit(const Interval &item, ArrayRef<const Interval *> placed) {
  SmallVector<std::pair<int64_t, int64_t>> busy; // [begin, end)
  for (const Interval *other : placed)
    if (other->first <= item.last && item.first <= other->last)
      busy.push_back({other->offset, other->offset + other->size});
  llvm::sort(busy);
  int64_t bestOffset = -1, bestWaste = 0, cursor = 0;
  for (auto [begin, end] : busy) {
    int64_t gap = begin - cursor;
    if (gap >= item.size && (bestOffset < 0 || gap - item.size < bestWaste)) {
      bestOffset = cursor;
      bestWaste = gap - item.size;
    }
    cursor = std::max(cursor, end);
  }
  return bestOffset >= 0 ? bestOffset : cursor;
}

LogicalResult planProgram(exec::ProgramOp program) {
  Block &body = program.getBody().front();
  SmallVector<exec::BufferOp> persistent;
  llvm::MapVector<Operation *, Interval> transient;

  // Live ranges come from the instructions alone, so the declarations may
  // sit anywhere; a buffer nothing touches is live at its declaration only.
  constexpr unsigned kUntouched = ~0u;
  DenseMap<Operation *, unsigned> declaredAt;
  unsigned index = 0;
  for (Operation &op : body) {
    if (auto buffer = dyn_cast<exec::BufferOp>(op)) {
      if (exec::isPersistent(buffer.getKind())) {
        persistent.push_back(buffer);
        continue;
      }
      int64_t size = alignUp(buffer.getSize());
      transient.insert({buffer, Interval{buffer, size, kUntouched, 0}});
      declaredAt[buffer] = index;
      continue;
    }
    if (!isa<exec::KernelOp, exec::CollectiveOp>(op))
      continue;
    for (Value operand : op.getOperands())
      if (exec::BufferOp root = rootBuffer(operand)) {
        auto it = transient.find(root);
        if (it == transient.end())
          continue;
        it->second.first = std::min(it->second.first, index);
        it->second.last = std::max(it->second.last, index);
      }
    ++index;
  }
  for (auto &[op, interval] : transient) {
    if (interval.first == kUntouched)
      interval.first = interval.last = declaredAt[op];
    // The runtime reads the loss after the last instruction.
    if (interval.buffer.getKind() == BufferKind::Loss)
      interval.last = std::max(interval.last, index);
  }

  OpBuilder builder(program.getContext());
  int64_t offset = 0;
  for (exec::BufferOp buffer : persistent) {
    buffer.setOffsetAttr(builder.getI64IntegerAttr(offset));
    offset += alignUp(buffer.getSize());
  }
  const int64_t base = offset;

  SmallVector<Interval *> order;
  for (auto &entry : transient)
    order.push_back(&entry.second);
  // Largest first; ties in program order, so the result is deterministic.
  llvm::stable_sort(order, [](const Interval *a, const Interval *b) {
    return a->size > b->size;
  });
  SmallVector<const Interval *> placed;
  int64_t end = 0;
  for (Interval *item : order) {
    item->offset = bestFit(*item, placed);
    placed.push_back(item);
    end = std::max(end, item->offset + item->size);
    item->buffer.setOffsetAttr(builder.getI64IntegerAttr(base + item->offset));
  }
  program.setArenaSize(base + end);

  // The invariant everything downstream relies on; cheap next to a step.
  for (auto [i, a] : llvm::enumerate(placed))
    for (const Interval *b : ArrayRef(placed).drop_front(i + 1))
      if (a->first <= b->last && b->first <= a->last &&
          a->offset < b->offset + b->size && b->offset < a->offset + a->size) {
        exec::BufferOp first = a->buffer, second = b->buffer;
        return first.emitError("exec-buffer-reuse placed '")
               << first.getName() << "' over '" << second.getName()
               << "' while both are live";
      }
  return success();
}

struct BufferReusePass : flexmoe::impl::BufferReuseBase<BufferReusePass> {
  using BufferReuseBase::BufferReuseBase;
  void runOnOperation() override {
    WalkResult result = getOperation().walk([](exec::ProgramOp program) {
      return failed(planProgram(program)) ? WalkResult::interrupt()
                                          : WalkResult::advance();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
