//===- ExecDialect.cpp - the exec dialect ---------------------------------===//
#include "flexmoe/Dialect/Exec/ExecDialect.h"
#include "flexmoe/Dialect/Exec/ExecOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace flexmoe::exec;

#include "flexmoe/Dialect/Exec/ExecDialect.cpp.inc"

#define GET_TYPEDEF_CLASSES
#include "flexmoe/Dialect/Exec/ExecTypes.cpp.inc"

//===----------------------------------------------------------------------===//
// BufferType
//===----------------------------------------------------------------------===//

Type BufferType::parse(AsmParser &parser) {
  SmallVector<int64_t> shape;
  Type elementType;
  if (parser.parseLess() ||
      parser.parseDimensionList(shape, /*allowDynamic=*/false,
                                /*withTrailingX=*/true) ||
      parser.parseType(elementType) || parser.parseGreater())
    return {};
  return parser.getChecked<BufferType>(parser.getContext(),
                                       ArrayRef<int64_t>(shape), elementType);
}

void BufferType::print(AsmPrinter &printer) const {
  printer << '<';
  for (int64_t dim : getShape())
    printer << dim << 'x';
  printer << getElementType() << '>';
}

LogicalResult BufferType::verify(function_ref<InFlightDiagnostic()> emitError,
                                 ArrayRef<int64_t> shape, Type elementType) {
  if (!elementType.isF32() && !elementType.isSignlessInteger(32))
    return emitError() << "buffer elements must be f32 or i32, not "
                       << elementType;
  if (llvm::any_of(shape, [](int64_t dim) { return dim < 0; }))
    return emitError() << "buffer dimensions must be static and non-negative";
  return success();
}

int64_t BufferType::getNumElements() const {
  int64_t elements = 1;
  for (int64_t dim : getShape())
    elements *= dim;
  return elements;
}

int64_t BufferType::getSizeInBytes() const { return getNumElements() * 4; }

void ExecDialect::initialize() {
  addTypes<
#define GET_TYPEDEF_LIST
#include "flexmoe/Dialect/Exec/ExecTypes.cpp.inc"
      >();
  addOperations<
#define GET_OP_LIST
#include "flexmoe/Dialect/Exec/ExecOps.cpp.inc"
      >();
}
