//===- NNOps.cpp - nn dialect ops: verifiers and type inference -----------===//
//
// Each inferring op has one shape function, used twice:
//  - by inferReturnTypes, silently: operands whose shapes do not fit give
//    unranked results, so that the InferTypeOpInterface check does not
//    pre-empt the verifier with a generic "incompatible types" message;
//  - by verify(), which reports the first problem in the op's terms.
// Unranked operands (IR before nn-shape-inference) skip the shape checks that
// need their rank; dynamic dimensions skip the size checks that need them.
//
//===----------------------------------------------------------------------===//
#include "flexmoe/Dialect/NN/NNOps.h"
#include "flexmoe/Dialect/Common/TypeUtils.h"

#include "mlir/Dialect/Traits.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/SmallSet.h"
#include "llvm/Support/MathExtras.h"

#include <charconv>
#include <cmath>
#include <string>

using namespace mlir;
using namespace flexmoe::nn;

namespace {

constexpr int64_t kDynamic = ShapedType::kDynamic;

bool isDynamic(int64_t dim) { return ShapedType::isDynamic(dim); }

/// The shortest decimal that reads back as `value` ("0.1", "-0.5", "1e-08"),
/// for messages about float attributes.
std::string formatFloat(float value) {
  if (std::isnan(value))
    return "NaN";
  char buffer[32];
  auto [end, ec] = std::to_chars(buffer, buffer + sizeof(buffer), value);
  return ec == std::errc() ? std::string(buffer, end) : std::string("?");
}

/// Both static and different.
bool conflict(int64_t a, int64_t b) {
  return !isDynamic(a) && !isDynamic(b) && a != b;
}

/// The static one of two compatible dimensions, if any.
int64_t meetDim(int64_t a, int64_t b) { return isDynamic(a) ? b : a; }

/// Where shape errors go: to the op being verified, or nowhere during type
/// inference.
class Checker {
public:
  explicit Checker(Operation *op = nullptr) : op(op) {}

  template <typename... Args> LogicalResult fail(const Args &...args) const {
    if (op) {
      InFlightDiagnostic diag = op->emitOpError();
      (diag << ... << args);
    }
    return failure();
  }

  /// `t` is a tensor; returns its shape if it is ranked.
  static std::optional<ArrayRef<int64_t>> shapeOf(Type t) {
    auto ranked = dyn_cast<RankedTensorType>(t);
    if (!ranked)
      return std::nullopt;
    return ranked.getShape();
  }

  LogicalResult sameElementType(Type t, StringRef name, Type ref,
                                StringRef refName) const {
    Type elt = cast<TensorType>(t).getElementType();
    Type refElt = cast<TensorType>(ref).getElementType();
    if (elt != refElt)
      return fail(name, " has element type ", elt, " but ", refName, " has ",
                  refElt);
    return success();
  }

  /// Succeeds for unranked `t`.
  LogicalResult rank(Type t, StringRef name, int64_t rank,
                     StringRef layout) const {
    auto shape = shapeOf(t);
    if (shape && static_cast<int64_t>(shape->size()) != rank)
      return fail(name, " must be ", layout, ", got ", t);
    return success();
  }

  LogicalResult minRank(Type t, StringRef name, int64_t rank,
                        StringRef layout) const {
    auto shape = shapeOf(t);
    if (shape && static_cast<int64_t>(shape->size()) < rank)
      return fail(name, " must be ", layout, ", got ", t);
    return success();
  }

  /// Element types equal, and shapes compatible where both are ranked.
  LogicalResult sameShape(Type t, StringRef name, Type ref,
                          StringRef refName) const {
    if (failed(sameElementType(t, name, ref, refName)))
      return failure();
    auto shape = shapeOf(t), refShape = shapeOf(ref);
    if (!shape || !refShape)
      return success();
    if (shape->size() != refShape->size())
      return fail(name, " must have the shape of ", refName, " (", ref,
                  "), got ", t);
    for (auto [a, b] : llvm::zip(*shape, *refShape))
      if (conflict(a, b))
        return fail(name, " must have the shape of ", refName, " (", ref,
                    "), got ", t);
    return success();
  }

private:
  Operation *op;
};

/// The most specific of a list of compatible tensor types (checked before).
Type meetAll(ArrayRef<Type> types) {
  Type result = types.front();
  for (Type t : types.drop_front())
    if (Type meet = flexmoe::meetTensorTypes(result, t))
      result = meet;
  return result;
}

Type unrankedLike(Type t) {
  return UnrankedTensorType::get(cast<TensorType>(t).getElementType());
}

/// Type inference with the lenient fallback: if the shape function rejects
/// the operands, every result is an unranked tensor of the given element
/// type(s) and verify() explains why.
LogicalResult inferOrFallback(LogicalResult status,
                              SmallVectorImpl<Type> &inferred,
                              ArrayRef<Type> fallbackLike) {
  if (succeeded(status))
    return success();
  inferred.clear();
  for (Type t : fallbackLike)
    inferred.push_back(unrankedLike(t));
  return success();
}

/// Rejects operands that are not tensors (only reachable from C++ builders;
/// the ODS constraints reject them in parsed IR).
LogicalResult requireTensors(std::optional<Location> loc, ValueRange operands) {
  for (Value v : operands)
    if (!isa<TensorType>(v.getType()))
      return emitOptionalError(loc, "nn ops take tensors, got ", v.getType());
  return success();
}

LogicalResult checkAxis(const Checker &c, Type x, int64_t axis) {
  auto shape = Checker::shapeOf(x);
  if (!shape)
    return success();
  int64_t rank = shape->size();
  if (axis < -rank || axis >= rank)
    return c.fail("axis ", axis, " is out of range for ", x, " (rank ", rank,
                  ")");
  return success();
}

LogicalResult checkApproximate(const Checker &c, StringRef approximate) {
  if (approximate != "tanh" && approximate != "none")
    return c.fail("approximate must be \"tanh\" or \"none\", got \"",
                  approximate, "\"");
  return success();
}

} // namespace

#define NN_COMPATIBLE_RETURN_TYPES(OP)                                         \
  bool OP::isCompatibleReturnTypes(TypeRange inferred, TypeRange actual) {     \
    return flexmoe::areCompatibleTensorTypes(inferred, actual);                \
  }

//===----------------------------------------------------------------------===//
// EmbeddingOp
//===----------------------------------------------------------------------===//

static LogicalResult embeddingShape(const Checker &c, Type ids, Type table,
                                    SmallVectorImpl<Type> &inferred) {
  if (failed(c.rank(table, "table", 2, "2-D [vocab, features]")))
    return failure();
  Type elt = cast<TensorType>(table).getElementType();
  auto idsShape = Checker::shapeOf(ids);
  if (!idsShape) {
    inferred.push_back(UnrankedTensorType::get(elt));
    return success();
  }
  SmallVector<int64_t> shape(*idsShape);
  auto tableShape = Checker::shapeOf(table);
  shape.push_back(tableShape ? (*tableShape)[1] : kDynamic);
  inferred.push_back(RankedTensorType::get(shape, elt));
  return success();
}

LogicalResult EmbeddingOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type table = adaptor.getTable().getType();
  return inferOrFallback(
      embeddingShape(Checker(), adaptor.getIds().getType(), table, inferred),
      inferred, {table});
}

LogicalResult EmbeddingOp::verify() {
  SmallVector<Type> inferred;
  return embeddingShape(Checker(*this), getIds().getType(),
                        getTable().getType(), inferred);
}

NN_COMPATIBLE_RETURN_TYPES(EmbeddingOp)

//===----------------------------------------------------------------------===//
// EmbeddingGradOp
//===----------------------------------------------------------------------===//

static LogicalResult embeddingGradShape(const Checker &c, Type ids, Type dy,
                                        int64_t vocabSize,
                                        SmallVectorImpl<Type> &inferred) {
  if (vocabSize <= 0)
    return c.fail("vocab_size must be positive, got ", vocabSize);
  if (failed(c.minRank(dy, "dy", 1, "[..., features]")))
    return failure();
  auto idsShape = Checker::shapeOf(ids), dyShape = Checker::shapeOf(dy);
  if (idsShape && dyShape) {
    if (dyShape->size() != idsShape->size() + 1)
      return c.fail("dy must be the shape of ids followed by the feature "
                    "dimension, got ids ",
                    ids, " and dy ", dy);
    for (auto [a, b] : llvm::zip(*idsShape, dyShape->drop_back()))
      if (conflict(a, b))
        return c.fail("dy must be the shape of ids followed by the feature "
                      "dimension, got ids ",
                      ids, " and dy ", dy);
  }
  int64_t features = dyShape ? dyShape->back() : kDynamic;
  inferred.push_back(RankedTensorType::get(
      {vocabSize, features}, cast<TensorType>(dy).getElementType()));
  return success();
}

LogicalResult
EmbeddingGradOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                  Adaptor adaptor,
                                  SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type dy = adaptor.getDy().getType();
  return inferOrFallback(embeddingGradShape(Checker(),
                                            adaptor.getIds().getType(), dy,
                                            adaptor.getVocabSize(), inferred),
                         inferred, {dy});
}

LogicalResult EmbeddingGradOp::verify() {
  SmallVector<Type> inferred;
  return embeddingGradShape(Checker(*this), getIds().getType(),
                            getDy().getType(), getVocabSize(), inferred);
}

NN_COMPATIBLE_RETURN_TYPES(EmbeddingGradOp)

//===----------------------------------------------------------------------===//
// LinearOp and LinearGradOp
//===----------------------------------------------------------------------===//

/// Checks x: [..., K] against weight: [K, N]; returns K and N (possibly
/// dynamic).
static LogicalResult linearOperands(const Checker &c, Type x, Type weight,
                                    int64_t &k, int64_t &n) {
  if (failed(c.minRank(x, "x", 1, "[..., in_features]")) ||
      failed(c.rank(weight, "weight", 2, "2-D [in_features, out_features]")) ||
      failed(c.sameElementType(weight, "weight", x, "x")))
    return failure();
  auto xShape = Checker::shapeOf(x), wShape = Checker::shapeOf(weight);
  int64_t xk = xShape ? xShape->back() : kDynamic;
  int64_t wk = wShape ? (*wShape)[0] : kDynamic;
  if (conflict(xk, wk))
    return c.fail("x has ", xk,
                  " features (its last dimension) but weight has ", wk,
                  " rows");
  k = meetDim(xk, wk);
  n = wShape ? (*wShape)[1] : kDynamic;
  return success();
}

static LogicalResult linearShape(const Checker &c, Type x, Type weight,
                                 Type bias, SmallVectorImpl<Type> &inferred) {
  int64_t k, n;
  if (failed(linearOperands(c, x, weight, k, n)))
    return failure();
  if (bias) {
    if (failed(c.rank(bias, "bias", 1, "1-D [out_features]")) ||
        failed(c.sameElementType(bias, "bias", x, "x")))
      return failure();
    if (auto bShape = Checker::shapeOf(bias)) {
      if (conflict((*bShape)[0], n))
        return c.fail("bias has ", (*bShape)[0], " elements but weight has ", n,
                      " columns");
      n = meetDim(n, (*bShape)[0]);
    }
  }
  Type elt = cast<TensorType>(x).getElementType();
  auto xShape = Checker::shapeOf(x);
  if (!xShape) {
    inferred.push_back(UnrankedTensorType::get(elt));
    return success();
  }
  SmallVector<int64_t> shape(xShape->drop_back());
  shape.push_back(n);
  inferred.push_back(RankedTensorType::get(shape, elt));
  return success();
}

LogicalResult LinearOp::inferReturnTypes(MLIRContext *,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type x = adaptor.getX().getType();
  Type bias = adaptor.getBias() ? adaptor.getBias().getType() : Type();
  return inferOrFallback(
      linearShape(Checker(), x, adaptor.getWeight().getType(), bias, inferred),
      inferred, {x});
}

LogicalResult LinearOp::verify() {
  SmallVector<Type> inferred;
  Type bias = getBias() ? getBias().getType() : Type();
  return linearShape(Checker(*this), getX().getType(), getWeight().getType(),
                     bias, inferred);
}

NN_COMPATIBLE_RETURN_TYPES(LinearOp)

static LogicalResult linearGradShape(const Checker &c, Type x, Type weight,
                                     Type dy, SmallVectorImpl<Type> &inferred) {
  int64_t k, n;
  if (failed(linearOperands(c, x, weight, k, n)) ||
      failed(c.sameElementType(dy, "dy", x, "x")) ||
      failed(c.minRank(dy, "dy", 1, "[..., out_features]")))
    return failure();
  auto xShape = Checker::shapeOf(x), dyShape = Checker::shapeOf(dy);
  if (dyShape && conflict(dyShape->back(), n))
    return c.fail("dy has ", dyShape->back(),
                  " features (its last dimension) but weight has ", n,
                  " columns");
  if (dyShape)
    n = meetDim(n, dyShape->back());
  // dx has the shape of x; its leading dimensions are also those of dy.
  Type dx;
  if (xShape && dyShape) {
    if (xShape->size() != dyShape->size())
      return c.fail("dy must have the leading dimensions of x, got x ", x,
                    " and dy ", dy);
    SmallVector<int64_t> shape;
    for (auto [a, b] : llvm::zip(xShape->drop_back(), dyShape->drop_back())) {
      if (conflict(a, b))
        return c.fail("dy must have the leading dimensions of x, got x ", x,
                      " and dy ", dy);
      shape.push_back(meetDim(a, b));
    }
    shape.push_back(k);
    dx = RankedTensorType::get(shape, cast<TensorType>(x).getElementType());
  } else if (xShape) {
    SmallVector<int64_t> shape(xShape->drop_back());
    shape.push_back(k);
    dx = RankedTensorType::get(shape, cast<TensorType>(x).getElementType());
  } else {
    dx = unrankedLike(x);
  }
  inferred.push_back(dx);
  inferred.push_back(
      RankedTensorType::get({k, n}, cast<TensorType>(weight).getElementType()));
  return success();
}

LogicalResult LinearGradOp::inferReturnTypes(MLIRContext *,
                                             std::optional<Location> loc,
                                             Adaptor adaptor,
                                             SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type x = adaptor.getX().getType(), weight = adaptor.getWeight().getType();
  return inferOrFallback(linearGradShape(Checker(), x, weight,
                                         adaptor.getDy().getType(), inferred),
                         inferred, {x, weight});
}

LogicalResult LinearGradOp::verify() {
  SmallVector<Type> inferred;
  return linearGradShape(Checker(*this), getX().getType(),
                         getWeight().getType(), getDy().getType(), inferred);
}

NN_COMPATIBLE_RETURN_TYPES(LinearGradOp)

//===----------------------------------------------------------------------===//
// MatmulOp
//===----------------------------------------------------------------------===//

static LogicalResult matmulShape(const Checker &c, Type lhs, Type rhs,
                                 bool transposeLhs, bool transposeRhs,
                                 SmallVectorImpl<Type> &inferred) {
  if (failed(c.minRank(lhs, "lhs", 2, "at least 2-D [..., M, K]")) ||
      failed(c.minRank(rhs, "rhs", 2, "at least 2-D [..., K, N]")) ||
      failed(c.sameElementType(rhs, "rhs", lhs, "lhs")))
    return failure();
  Type elt = cast<TensorType>(lhs).getElementType();
  auto lhsShape = Checker::shapeOf(lhs), rhsShape = Checker::shapeOf(rhs);
  if (lhsShape && rhsShape && rhsShape->size() != 2 &&
      rhsShape->size() != lhsShape->size())
    return c.fail("rhs must be 2-D or have the rank of lhs, got lhs ", lhs,
                  " and rhs ", rhs);
  if (!lhsShape) {
    inferred.push_back(UnrankedTensorType::get(elt));
    return success();
  }
  int64_t rank = lhsShape->size();
  int64_t m = (*lhsShape)[rank - (transposeLhs ? 1 : 2)];
  int64_t lhsK = (*lhsShape)[rank - (transposeLhs ? 2 : 1)];
  SmallVector<int64_t> shape(lhsShape->drop_back(2));
  int64_t n = kDynamic;
  if (rhsShape) {
    int64_t rhsRank = rhsShape->size();
    int64_t rhsK = (*rhsShape)[rhsRank - (transposeRhs ? 1 : 2)];
    n = (*rhsShape)[rhsRank - (transposeRhs ? 2 : 1)];
    if (conflict(lhsK, rhsK))
      return c.fail("contraction dimensions differ: lhs ", lhs,
                    " has K = ", lhsK, " but rhs ", rhs, " has K = ", rhsK);
    if (rhsRank == rank) {
      for (auto [i, pair] : llvm::enumerate(
               llvm::zip(lhsShape->drop_back(2), rhsShape->drop_back(2)))) {
        auto [a, b] = pair;
        if (conflict(a, b))
          return c.fail("batch dimension ", i, " differs: lhs ", lhs,
                        " and rhs ", rhs);
        shape[i] = meetDim(a, b);
      }
    }
  }
  shape.push_back(m);
  shape.push_back(n);
  inferred.push_back(RankedTensorType::get(shape, elt));
  return success();
}

LogicalResult MatmulOp::inferReturnTypes(MLIRContext *,
                                         std::optional<Location> loc,
                                         Adaptor adaptor,
                                         SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type lhs = adaptor.getLhs().getType();
  return inferOrFallback(matmulShape(Checker(), lhs, adaptor.getRhs().getType(),
                                     adaptor.getTransposeLhs(),
                                     adaptor.getTransposeRhs(), inferred),
                         inferred, {lhs});
}

LogicalResult MatmulOp::verify() {
  SmallVector<Type> inferred;
  return matmulShape(Checker(*this), getLhs().getType(), getRhs().getType(),
                     getTransposeLhs(), getTransposeRhs(), inferred);
}

NN_COMPATIBLE_RETURN_TYPES(MatmulOp)

//===----------------------------------------------------------------------===//
// LayerNormOp and LayerNormGradOp
//===----------------------------------------------------------------------===//

/// Checks x: [..., D] against a per-feature vector [D].
static LogicalResult checkFeatureVector(const Checker &c, Type x, Type vec,
                                        StringRef name) {
  if (failed(c.rank(vec, name, 1, "1-D [features]")) ||
      failed(c.sameElementType(vec, name, x, "x")))
    return failure();
  auto xShape = Checker::shapeOf(x), vShape = Checker::shapeOf(vec);
  if (xShape && vShape && conflict(xShape->back(), (*vShape)[0]))
    return c.fail(name, " has ", (*vShape)[0], " elements but x has ",
                  xShape->back(), " features (its last dimension)");
  return success();
}

/// The [D] type of gamma, beta and their gradients.
static Type featureVectorType(Type x, Type gamma) {
  Type elt = cast<TensorType>(x).getElementType();
  auto xShape = Checker::shapeOf(x), gShape = Checker::shapeOf(gamma);
  int64_t d = meetDim(xShape ? xShape->back() : kDynamic,
                      gShape ? (*gShape)[0] : kDynamic);
  return RankedTensorType::get({d}, elt);
}

static LogicalResult checkEpsilon(const Checker &c, float epsilon) {
  if (!(epsilon > 0.0f) || !std::isfinite(epsilon))
    return c.fail("epsilon must be a positive number, got ",
                  formatFloat(epsilon));
  return success();
}

static LogicalResult layerNormShape(const Checker &c, Type x, Type gamma,
                                    Type beta,
                                    SmallVectorImpl<Type> &inferred) {
  if (failed(c.minRank(x, "x", 1, "[..., features]")) ||
      failed(checkFeatureVector(c, x, gamma, "gamma")) ||
      failed(checkFeatureVector(c, x, beta, "beta")) ||
      failed(c.sameShape(beta, "beta", gamma, "gamma")))
    return failure();
  Type result = x;
  if (auto xShape = Checker::shapeOf(x)) {
    SmallVector<int64_t> shape(*xShape);
    shape.back() =
        cast<RankedTensorType>(featureVectorType(x, gamma)).getDimSize(0);
    shape.back() = meetDim(
        shape.back(),
        cast<RankedTensorType>(featureVectorType(x, beta)).getDimSize(0));
    result = RankedTensorType::get(shape, cast<TensorType>(x).getElementType());
  }
  inferred.push_back(result);
  return success();
}

LogicalResult LayerNormOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type x = adaptor.getX().getType();
  return inferOrFallback(layerNormShape(Checker(), x,
                                        adaptor.getGamma().getType(),
                                        adaptor.getBeta().getType(), inferred),
                         inferred, {x});
}

LogicalResult LayerNormOp::verify() {
  SmallVector<Type> inferred;
  Checker c(*this);
  if (failed(checkEpsilon(c, getEpsilon())))
    return failure();
  return layerNormShape(c, getX().getType(), getGamma().getType(),
                        getBeta().getType(), inferred);
}

NN_COMPATIBLE_RETURN_TYPES(LayerNormOp)

static LogicalResult layerNormGradShape(const Checker &c, Type x, Type gamma,
                                        Type dy,
                                        SmallVectorImpl<Type> &inferred) {
  if (failed(c.minRank(x, "x", 1, "[..., features]")) ||
      failed(checkFeatureVector(c, x, gamma, "gamma")) ||
      failed(c.sameShape(dy, "dy", x, "x")))
    return failure();
  Type vec = featureVectorType(x, gamma);
  Type dx = meetAll({x, dy});
  if (auto dxShape = Checker::shapeOf(dx)) {
    SmallVector<int64_t> shape(*dxShape);
    shape.back() = cast<RankedTensorType>(vec).getDimSize(0);
    dx = RankedTensorType::get(shape, cast<TensorType>(x).getElementType());
  }
  inferred.append({dx, vec, vec});
  return success();
}

LogicalResult
LayerNormGradOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                  Adaptor adaptor,
                                  SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type x = adaptor.getX().getType(), gamma = adaptor.getGamma().getType();
  return inferOrFallback(layerNormGradShape(Checker(), x, gamma,
                                            adaptor.getDy().getType(),
                                            inferred),
                         inferred, {x, gamma, gamma});
}

LogicalResult LayerNormGradOp::verify() {
  SmallVector<Type> inferred;
  Checker c(*this);
  if (failed(checkEpsilon(c, getEpsilon())))
    return failure();
  return layerNormGradShape(c, getX().getType(), getGamma().getType(),
                            getDy().getType(), inferred);
}

NN_COMPATIBLE_RETURN_TYPES(LayerNormGradOp)

//===----------------------------------------------------------------------===//
// Elementwise unary ops and their gradients
//===----------------------------------------------------------------------===//

/// The result of an op whose result has the type of its operands `xs`
/// (which must agree).
static LogicalResult elementwiseShape(const Checker &c,
                                      ArrayRef<std::pair<Type, StringRef>> xs,
                                      SmallVectorImpl<Type> &inferred) {
  SmallVector<Type> types;
  for (auto [t, name] : xs) {
    if (!types.empty() &&
        failed(c.sameShape(t, name, xs.front().first, xs.front().second)))
      return failure();
    types.push_back(t);
  }
  inferred.push_back(meetAll(types));
  return success();
}

// Elementwise ops whose result has exactly the type of their operand x.
#define NN_SAME_TYPE_AS_X(OP)                                                  \
  LogicalResult OP::inferReturnTypes(                                          \
      MLIRContext *, std::optional<Location> loc, Adaptor adaptor,             \
      SmallVectorImpl<Type> &inferred) {                                       \
    if (failed(requireTensors(loc, adaptor.getOperands())))                    \
      return failure();                                                        \
    inferred.push_back(adaptor.getX().getType());                              \
    return success();                                                          \
  }

NN_SAME_TYPE_AS_X(GeluOp)

LogicalResult GeluOp::verify() {
  return checkApproximate(Checker(*this), getApproximate());
}

NN_COMPATIBLE_RETURN_TYPES(GeluOp)

LogicalResult GeluGradOp::inferReturnTypes(MLIRContext *,
                                           std::optional<Location> loc,
                                           Adaptor adaptor,
                                           SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type x = adaptor.getX().getType();
  return inferOrFallback(
      elementwiseShape(Checker(), {{x, "x"}, {adaptor.getDy().getType(), "dy"}},
                       inferred),
      inferred, {x});
}

LogicalResult GeluGradOp::verify() {
  Checker c(*this);
  SmallVector<Type> inferred;
  if (failed(checkApproximate(c, getApproximate())))
    return failure();
  return elementwiseShape(
      c, {{getX().getType(), "x"}, {getDy().getType(), "dy"}}, inferred);
}

NN_COMPATIBLE_RETURN_TYPES(GeluGradOp)

static LogicalResult softmaxShape(const Checker &c, Type x, int64_t axis,
                                  SmallVectorImpl<Type> &inferred) {
  if (failed(c.minRank(x, "x", 1, "at least 1-D")) ||
      failed(checkAxis(c, x, axis)))
    return failure();
  inferred.push_back(x);
  return success();
}

LogicalResult SoftmaxOp::inferReturnTypes(MLIRContext *,
                                          std::optional<Location> loc,
                                          Adaptor adaptor,
                                          SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type x = adaptor.getX().getType();
  return inferOrFallback(
      softmaxShape(Checker(), x, adaptor.getAxis(), inferred), inferred, {x});
}

LogicalResult SoftmaxOp::verify() {
  SmallVector<Type> inferred;
  return softmaxShape(Checker(*this), getX().getType(), getAxis(), inferred);
}

NN_COMPATIBLE_RETURN_TYPES(SoftmaxOp)

static LogicalResult softmaxGradShape(const Checker &c, Type y, Type dy,
                                      int64_t axis,
                                      SmallVectorImpl<Type> &inferred) {
  if (failed(c.minRank(y, "y", 1, "at least 1-D")) ||
      failed(checkAxis(c, y, axis)))
    return failure();
  return elementwiseShape(c, {{y, "y"}, {dy, "dy"}}, inferred);
}

LogicalResult SoftmaxGradOp::inferReturnTypes(MLIRContext *,
                                              std::optional<Location> loc,
                                              Adaptor adaptor,
                                              SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type y = adaptor.getY().getType();
  return inferOrFallback(softmaxGradShape(Checker(), y,
                                          adaptor.getDy().getType(),
                                          adaptor.getAxis(), inferred),
                         inferred, {y});
}

LogicalResult SoftmaxGradOp::verify() {
  SmallVector<Type> inferred;
  return softmaxGradShape(Checker(*this), getY().getType(), getDy().getType(),
                          getAxis(), inferred);
}

NN_COMPATIBLE_RETURN_TYPES(SoftmaxGradOp)

//===----------------------------------------------------------------------===//
// AttentionOp and AttentionGradOp
//===----------------------------------------------------------------------===//

static LogicalResult checkAttentionAttrs(const Checker &c, int64_t numHeads,
                                         int64_t window) {
  if (numHeads <= 0)
    return c.fail("num_heads must be positive, got ", numHeads);
  if (window < 0)
    return c.fail("window must be >= 0 (0 means full attention), got ", window);
  return success();
}

/// q, k, v (and dy) all [B, S, D] with num_heads dividing D.
static LogicalResult attentionShape(const Checker &c,
                                    ArrayRef<std::pair<Type, StringRef>> xs,
                                    int64_t numHeads, unsigned numResults,
                                    SmallVectorImpl<Type> &inferred) {
  for (auto [t, name] : xs)
    if (failed(c.rank(t, name, 3, "3-D [batch, sequence, features]")))
      return failure();
  SmallVector<Type> merged;
  if (failed(elementwiseShape(c, xs, merged)))
    return failure();
  if (auto shape = Checker::shapeOf(merged[0])) {
    int64_t d = (*shape)[2];
    if (!isDynamic(d) && numHeads > 0 && d % numHeads != 0)
      return c.fail("num_heads = ", numHeads,
                    " does not divide the feature dimension ", d);
  }
  inferred.append(numResults, merged[0]);
  return success();
}

LogicalResult AttentionOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type q = adaptor.getQ().getType();
  return inferOrFallback(attentionShape(Checker(),
                                        {{q, "q"},
                                         {adaptor.getK().getType(), "k"},
                                         {adaptor.getV().getType(), "v"}},
                                        adaptor.getNumHeads(), 1, inferred),
                         inferred, {q});
}

LogicalResult AttentionOp::verify() {
  Checker c(*this);
  SmallVector<Type> inferred;
  if (failed(checkAttentionAttrs(c, getNumHeads(), getWindow())))
    return failure();
  return attentionShape(c,
                        {{getQ().getType(), "q"},
                         {getK().getType(), "k"},
                         {getV().getType(), "v"}},
                        getNumHeads(), 1, inferred);
}

NN_COMPATIBLE_RETURN_TYPES(AttentionOp)

LogicalResult
AttentionGradOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                  Adaptor adaptor,
                                  SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type q = adaptor.getQ().getType();
  return inferOrFallback(attentionShape(Checker(),
                                        {{q, "q"},
                                         {adaptor.getK().getType(), "k"},
                                         {adaptor.getV().getType(), "v"},
                                         {adaptor.getDy().getType(), "dy"}},
                                        adaptor.getNumHeads(), 3, inferred),
                         inferred, {q, q, q});
}

LogicalResult AttentionGradOp::verify() {
  Checker c(*this);
  SmallVector<Type> inferred;
  if (failed(checkAttentionAttrs(c, getNumHeads(), getWindow())))
    return failure();
  return attentionShape(c,
                        {{getQ().getType(), "q"},
                         {getK().getType(), "k"},
                         {getV().getType(), "v"},
                         {getDy().getType(), "dy"}},
                        getNumHeads(), 3, inferred);
}

NN_COMPATIBLE_RETURN_TYPES(AttentionGradOp)

//===----------------------------------------------------------------------===//
// AddOp, MulOp, ScaleOp
//===----------------------------------------------------------------------===//

static LogicalResult broadcastShape(const Checker &c, Type lhs, Type rhs,
                                    SmallVectorImpl<Type> &inferred) {
  if (failed(c.sameElementType(rhs, "rhs", lhs, "lhs")))
    return failure();
  Type elt = cast<TensorType>(lhs).getElementType();
  auto lhsShape = Checker::shapeOf(lhs), rhsShape = Checker::shapeOf(rhs);
  if (!lhsShape || !rhsShape) {
    inferred.push_back(UnrankedTensorType::get(elt));
    return success();
  }
  SmallVector<int64_t> shape;
  if (!OpTrait::util::getBroadcastedShape(*lhsShape, *rhsShape, shape))
    return c.fail("shapes of lhs ", lhs, " and rhs ", rhs, " do not broadcast");
  inferred.push_back(RankedTensorType::get(shape, elt));
  return success();
}

#define NN_BROADCAST_OP(OP)                                                    \
  LogicalResult OP::inferReturnTypes(                                          \
      MLIRContext *, std::optional<Location> loc, Adaptor adaptor,             \
      SmallVectorImpl<Type> &inferred) {                                       \
    if (failed(requireTensors(loc, adaptor.getOperands())))                    \
      return failure();                                                        \
    Type lhs = adaptor.getLhs().getType();                                     \
    return inferOrFallback(                                                    \
        broadcastShape(Checker(), lhs, adaptor.getRhs().getType(), inferred),  \
        inferred, {lhs});                                                      \
  }                                                                            \
  LogicalResult OP::verify() {                                                 \
    SmallVector<Type> inferred;                                                \
    return broadcastShape(Checker(*this), getLhs().getType(),                  \
                          getRhs().getType(), inferred);                       \
  }                                                                            \
  NN_COMPATIBLE_RETURN_TYPES(OP)

NN_BROADCAST_OP(AddOp)
NN_BROADCAST_OP(MulOp)

NN_SAME_TYPE_AS_X(ScaleOp)

LogicalResult ScaleOp::verify() {
  if (!std::isfinite(getFactor()))
    return emitOpError("factor must be finite, got ")
           << formatFloat(getFactor());
  return success();
}

NN_COMPATIBLE_RETURN_TYPES(ScaleOp)

//===----------------------------------------------------------------------===//
// ReduceSumOp
//===----------------------------------------------------------------------===//

static LogicalResult reduceSumShape(const Checker &c, Type x,
                                    ArrayRef<int64_t> dims, bool keepDims,
                                    SmallVectorImpl<Type> &inferred) {
  auto shape = Checker::shapeOf(x);
  llvm::SmallSet<int64_t, 4> seen;
  for (int64_t dim : dims) {
    int64_t normalized = dim;
    if (shape) {
      int64_t rank = shape->size();
      if (dim < -rank || dim >= rank)
        return c.fail("dimension ", dim, " in dims is out of range for ", x,
                      " (rank ", rank, ")");
      normalized = dim < 0 ? dim + rank : dim;
    }
    if (!seen.insert(normalized).second)
      return c.fail("dimension ", dim, " appears more than once in dims");
  }
  if (!shape) {
    inferred.push_back(unrankedLike(x));
    return success();
  }
  SmallVector<int64_t> result;
  for (auto [i, size] : llvm::enumerate(*shape)) {
    if (!seen.contains(i))
      result.push_back(size);
    else if (keepDims)
      result.push_back(1);
  }
  inferred.push_back(
      RankedTensorType::get(result, cast<TensorType>(x).getElementType()));
  return success();
}

LogicalResult ReduceSumOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type x = adaptor.getX().getType();
  return inferOrFallback(reduceSumShape(Checker(), x, adaptor.getDims(),
                                        adaptor.getKeepDims(), inferred),
                         inferred, {x});
}

LogicalResult ReduceSumOp::verify() {
  SmallVector<Type> inferred;
  return reduceSumShape(Checker(*this), getX().getType(), getDims(),
                        getKeepDims(), inferred);
}

NN_COMPATIBLE_RETURN_TYPES(ReduceSumOp)

//===----------------------------------------------------------------------===//
// ReshapeOp
//===----------------------------------------------------------------------===//

/// The element count of a static shape, or nullopt if it does not fit in 64
/// bits (ShapedType::getNumElements would overflow).
static std::optional<uint64_t> elementCount(ArrayRef<int64_t> shape) {
  uint64_t count = 1;
  for (int64_t dim : shape) {
    bool overflow = false;
    count =
        llvm::SaturatingMultiply(count, static_cast<uint64_t>(dim), &overflow);
    if (overflow || count > static_cast<uint64_t>(INT64_MAX))
      return std::nullopt;
  }
  return count;
}

LogicalResult ReshapeOp::verify() {
  auto x = cast<TensorType>(getX().getType());
  auto result = cast<TensorType>(getType());
  if (x.getElementType() != result.getElementType())
    return emitOpError("result element type ")
           << result.getElementType() << " differs from the element type "
           << x.getElementType() << " of x";
  if (!x.hasStaticShape() || !result.hasStaticShape())
    return success();
  std::optional<uint64_t> from = elementCount(x.getShape());
  std::optional<uint64_t> to = elementCount(result.getShape());
  if (!from || !to)
    return emitOpError("element count of ")
           << (from ? result : x) << " does not fit in 64 bits";
  if (*from != *to)
    return emitOpError("cannot reshape ")
           << x << " (" << *from << " elements) into " << result << " (" << *to
           << " elements)";
  return success();
}

//===----------------------------------------------------------------------===//
// TransposeOp
//===----------------------------------------------------------------------===//

static LogicalResult transposeShape(const Checker &c, Type x,
                                    ArrayRef<int64_t> permutation,
                                    SmallVectorImpl<Type> &inferred) {
  int64_t size = permutation.size();
  auto shape = Checker::shapeOf(x);
  if (shape && static_cast<int64_t>(shape->size()) != size)
    return c.fail("permutation has ", size, " entries but x ", x, " has rank ",
                  shape->size());
  SmallVector<bool> seen(size, false);
  for (int64_t p : permutation) {
    if (p < 0 || p >= size)
      return c.fail("permutation entry ", p, " is out of range [0, ", size,
                    ")");
    if (seen[p])
      return c.fail("permutation entry ", p, " appears more than once");
    seen[p] = true;
  }
  if (!shape) {
    inferred.push_back(unrankedLike(x));
    return success();
  }
  SmallVector<int64_t> result;
  for (int64_t p : permutation)
    result.push_back((*shape)[p]);
  inferred.push_back(
      RankedTensorType::get(result, cast<TensorType>(x).getElementType()));
  return success();
}

LogicalResult TransposeOp::inferReturnTypes(MLIRContext *,
                                            std::optional<Location> loc,
                                            Adaptor adaptor,
                                            SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type x = adaptor.getX().getType();
  return inferOrFallback(
      transposeShape(Checker(), x, adaptor.getPermutation(), inferred),
      inferred, {x});
}

LogicalResult TransposeOp::verify() {
  SmallVector<Type> inferred;
  return transposeShape(Checker(*this), getX().getType(), getPermutation(),
                        inferred);
}

NN_COMPATIBLE_RETURN_TYPES(TransposeOp)

//===----------------------------------------------------------------------===//
// RollOp
//===----------------------------------------------------------------------===//

NN_SAME_TYPE_AS_X(RollOp)

LogicalResult RollOp::verify() {
  ArrayRef<int64_t> shifts = getShifts(), dims = getDims();
  if (dims.empty())
    return emitOpError("dims must name at least one dimension");
  if (shifts.size() != dims.size())
    return emitOpError("shifts has ")
           << shifts.size() << " entries but dims has " << dims.size();
  auto shape = Checker::shapeOf(getX().getType());
  llvm::SmallSet<int64_t, 4> seen;
  for (int64_t dim : dims) {
    int64_t normalized = dim;
    if (shape) {
      int64_t rank = shape->size();
      if (dim < -rank || dim >= rank)
        return emitOpError("dimension ")
               << dim << " in dims is out of range for " << getX().getType()
               << " (rank " << rank << ")";
      normalized = dim < 0 ? dim + rank : dim;
    }
    if (!seen.insert(normalized).second)
      return emitOpError("dimension ")
             << dim << " appears more than once in dims";
  }
  return success();
}

NN_COMPATIBLE_RETURN_TYPES(RollOp)

//===----------------------------------------------------------------------===//
// DropoutOp
//===----------------------------------------------------------------------===//

NN_SAME_TYPE_AS_X(DropoutOp)

LogicalResult DropoutOp::verify() {
  float rate = getRate();
  // Written so that NaN fails too.
  if (!(rate >= 0.0f && rate < 1.0f))
    return emitOpError("rate must be in [0, 1), got ") << formatFloat(rate);
  return success();
}

NN_COMPATIBLE_RETURN_TYPES(DropoutOp)

//===----------------------------------------------------------------------===//
// CrossEntropyOp and CrossEntropyGradOp
//===----------------------------------------------------------------------===//

static LogicalResult checkLogitsAndLabels(const Checker &c, Type logits,
                                          Type labels) {
  if (failed(c.minRank(logits, "logits", 1, "[..., classes]")))
    return failure();
  auto lShape = Checker::shapeOf(logits), yShape = Checker::shapeOf(labels);
  if (!lShape || !yShape)
    return success();
  bool matches = yShape->size() + 1 == lShape->size();
  for (auto [a, b] : llvm::zip(*yShape, lShape->drop_back()))
    matches = matches && !conflict(a, b);
  if (!matches)
    return c.fail("labels must have the shape of logits without its last "
                  "(class) dimension, got logits ",
                  logits, " and labels ", labels);
  return success();
}

LogicalResult
CrossEntropyOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                 Adaptor adaptor,
                                 SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  // The loss is a scalar whatever the operands' shapes.
  inferred.push_back(RankedTensorType::get(
      {}, cast<TensorType>(adaptor.getLogits().getType()).getElementType()));
  return success();
}

LogicalResult CrossEntropyOp::verify() {
  return checkLogitsAndLabels(Checker(*this), getLogits().getType(),
                              getLabels().getType());
}

NN_COMPATIBLE_RETURN_TYPES(CrossEntropyOp)

static LogicalResult crossEntropyGradShape(const Checker &c, Type logits,
                                           Type labels, Type dloss,
                                           SmallVectorImpl<Type> &inferred) {
  if (failed(checkLogitsAndLabels(c, logits, labels)) ||
      failed(c.rank(dloss, "dloss", 0, "a 0-d tensor (the loss gradient)")) ||
      failed(c.sameElementType(dloss, "dloss", logits, "logits")))
    return failure();
  inferred.push_back(logits);
  return success();
}

LogicalResult
CrossEntropyGradOp::inferReturnTypes(MLIRContext *, std::optional<Location> loc,
                                     Adaptor adaptor,
                                     SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type logits = adaptor.getLogits().getType();
  return inferOrFallback(
      crossEntropyGradShape(Checker(), logits, adaptor.getLabels().getType(),
                            adaptor.getDloss().getType(), inferred),
      inferred, {logits});
}

LogicalResult CrossEntropyGradOp::verify() {
  SmallVector<Type> inferred;
  return crossEntropyGradShape(Checker(*this), getLogits().getType(),
                               getLabels().getType(), getDloss().getType(),
                               inferred);
}

NN_COMPATIBLE_RETURN_TYPES(CrossEntropyGradOp)

//===----------------------------------------------------------------------===//
// FillOp
//===----------------------------------------------------------------------===//

LogicalResult FillOp::verify() {
  if (std::isnan(getValue()))
    return emitOpError("value must be a number, got NaN");
  return success();
}

//===----------------------------------------------------------------------===//
// AdamWOp
//===----------------------------------------------------------------------===//

static LogicalResult adamWShape(const Checker &c, Type param, Type grad, Type m,
                                Type v, SmallVectorImpl<Type> &inferred) {
  SmallVector<Type> merged;
  if (failed(elementwiseShape(
          c, {{param, "param"}, {grad, "grad"}, {m, "m"}, {v, "v"}}, merged)))
    return failure();
  inferred.append(3, merged[0]);
  return success();
}

LogicalResult AdamWOp::inferReturnTypes(MLIRContext *,
                                        std::optional<Location> loc,
                                        Adaptor adaptor,
                                        SmallVectorImpl<Type> &inferred) {
  if (failed(requireTensors(loc, adaptor.getOperands())))
    return failure();
  Type param = adaptor.getParam().getType();
  return inferOrFallback(
      adamWShape(Checker(), param, adaptor.getGrad().getType(),
                 adaptor.getM().getType(), adaptor.getV().getType(), inferred),
      inferred, {param, param, param});
}

LogicalResult AdamWOp::verify() {
  auto inUnitInterval = [](float f) { return f >= 0.0f && f < 1.0f; };
  if (!(getLr() >= 0.0f) || !std::isfinite(getLr()))
    return emitOpError("lr must be a non-negative number, got ")
           << formatFloat(getLr());
  if (!inUnitInterval(getBeta1()))
    return emitOpError("beta1 must be in [0, 1), got ")
           << formatFloat(getBeta1());
  if (!inUnitInterval(getBeta2()))
    return emitOpError("beta2 must be in [0, 1), got ")
           << formatFloat(getBeta2());
  if (!(getEpsilon() > 0.0f) || !std::isfinite(getEpsilon()))
    return emitOpError("epsilon must be a positive number, got ")
           << formatFloat(getEpsilon());
  if (!(getWeightDecay() >= 0.0f) || !std::isfinite(getWeightDecay()))
    return emitOpError("weight_decay must be a non-negative number, got ")
           << formatFloat(getWeightDecay());
  SmallVector<Type> inferred;
  return adamWShape(Checker(*this), getParam().getType(), getGrad().getType(),
                    getM().getType(), getV().getType(), inferred);
}

NN_COMPATIBLE_RETURN_TYPES(AdamWOp)

#define GET_OP_CLASSES
#include "flexmoe/Dialect/NN/NNOps.cpp.inc"
