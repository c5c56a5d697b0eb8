//===- Gradients.cpp - gradient rule registration and shared helpers ------===//
#include "flexmoe/Passes/Gradients.h"

#include "flexmoe/Dialect/NN/NNOps.h"

#include "mlir/IR/BuiltinTypes.h"

using namespace mlir;
using namespace flexmoe;

void flexmoe::registerGradientRules(DialectRegistry &registry) {
  grad::registerNNGradientRules(registry);
  grad::registerMoeGradientRules(registry);
}

SmallVector<NamedAttribute> grad::copyAttributes(Operation *op,
                                                 ArrayRef<StringRef> names) {
  SmallVector<NamedAttribute> attributes;
  for (StringRef name : names)
    if (Attribute value = op->getAttr(name))
      attributes.emplace_back(StringAttr::get(op->getContext(), name), value);
  return attributes;
}

Value grad::createFill(OpBuilder &builder, Location loc, Type type,
                       double value) {
  return createOp<nn::FillOp>(
      builder, loc, type, ValueRange{},
      {builder.getNamedAttr("value", builder.getF32FloatAttr(value))});
}

Value grad::reshapeTo(OpBuilder &builder, Location loc, Value value,
                      Type type) {
  if (value.getType() == type)
    return value;
  return createOp<nn::ReshapeOp>(builder, loc, type, value);
}

Value grad::sumToShape(OpBuilder &builder, Location loc, Value gradient,
                       Type operandType) {
  if (gradient.getType() == operandType)
    return gradient;
  auto gradientType = cast<RankedTensorType>(gradient.getType());
  auto targetType = cast<RankedTensorType>(operandType);
  ArrayRef<int64_t> shape = gradientType.getShape();
  ArrayRef<int64_t> target = targetType.getShape();
  assert(shape.size() >= target.size() && "operand of higher rank than result");

  // Dimensions are aligned to the right; the extra leading ones and those
  // where the operand has size 1 were broadcast.
  int64_t leading = shape.size() - target.size();
  SmallVector<int64_t> dims;
  SmallVector<int64_t> keptShape(shape);
  bool onlyLeading = true;
  for (int64_t d = 0, e = shape.size(); d < e; ++d) {
    if (d < leading || (target[d - leading] == 1 && shape[d] != 1)) {
      dims.push_back(d);
      keptShape[d] = 1;
      onlyLeading &= d < leading;
    }
  }
  if (dims.empty())
    return reshapeTo(builder, loc, gradient, targetType);

  // Summing away only the leading dimensions gives the operand's shape
  // directly; otherwise keep the summed dimensions and reshape.
  auto summedType =
      onlyLeading
          ? targetType
          : RankedTensorType::get(keptShape, gradientType.getElementType());
  Value summed = createOp<nn::ReduceSumOp>(
      builder, loc, summedType, gradient,
      {builder.getNamedAttr("dims", builder.getDenseI64ArrayAttr(dims)),
       builder.getNamedAttr("keep_dims", builder.getBoolAttr(!onlyLeading))});
  return reshapeTo(builder, loc, summed, targetType);
}

Value grad::broadcastTo(OpBuilder &builder, Location loc, Value value,
                        Type type) {
  if (value.getType() == type)
    return value;
  Value zeros = createFill(builder, loc, type, 0.0);
  return createOp<nn::AddOp>(builder, loc, type, ValueRange{zeros, value});
}
