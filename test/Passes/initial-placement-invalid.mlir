// Every input error of moe-initial-placement: a clear message, a non-zero exit.
// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/does-not-exist.json" 2>&1 | FileCheck %s --check-prefix=MISSING
// MISSING: error: cannot open placement file '{{.*}}does-not-exist.json': {{[Nn]}}o such file or directory

// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-malformed.json" 2>&1 | FileCheck %s --check-prefix=MALFORMED
// MALFORMED: error: placement file '{{.*}}placement-malformed.json': malformed JSON [4:3, byte={{[0-9]+}}]: Expected , or } after object property

// RUN: not flexmoe-opt %s --moe-initial-placement="world-size=2 placement-file=%S/Inputs/placement-one-layer.json" 2>&1 | FileCheck %s --check-prefix=WORLD
// WORLD: error: placement file '{{.*}}placement-one-layer.json' has world_size 4 but the pass was given world-size = 2

// RUN: not flexmoe-opt %s --moe-initial-placement="slots-per-device=3 placement-file=%S/Inputs/placement-one-layer.json" 2>&1 | FileCheck %s --check-prefix=SLOTS
// SLOTS: error: placement file '{{.*}}placement-one-layer.json' has slots_per_device 2 but the pass was given slots-per-device = 3

// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-one-layer.json" 2>&1 | FileCheck %s --check-prefix=NOLAYER
// NOLAYER: [[@LINE+55]]:{{[0-9]+}}: error: 'moe.layer' op placement file has no entry for layer 'moe2'

// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-unknown-layer.json" 2>&1 | FileCheck %s --check-prefix=UNKNOWN
// UNKNOWN: error: placement file '{{.*}}placement-unknown-layer.json' has an entry for layer 'moe9', which is not in the module

// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-no-replica.json" 2>&1 | FileCheck %s --check-prefix=NOREPLICA
// NOREPLICA: [[@LINE+44]]:{{[0-9]+}}: error: 'moe.layer' op expert 3 of layer 'moe1' has no replica

// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-out-of-range.json" 2>&1 | FileCheck %s --check-prefix=RANGE
// RANGE: error: 'moe.layer' op device 4 of expert 2 in layer 'moe1' is out of range [0, 4)

// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-too-many.json" 2>&1 | FileCheck %s --check-prefix=TOOMANY
// TOOMANY: error: 'moe.layer' op device 1 holds 2 experts of layer 'moe1' but has 1 slots

// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-duplicate.json" 2>&1 | FileCheck %s --check-prefix=DUPLICATE
// DUPLICATE: error: 'moe.layer' op expert 1 of layer 'moe1' lists device 1 twice

// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-wrong-count.json" 2>&1 | FileCheck %s --check-prefix=COUNT
// COUNT: error: 'moe.layer' op layer 'moe1' has 4 experts but its placement lists 2

// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-bad-types.json" 2>&1 | FileCheck %s --check-prefix=TYPES
// TYPES: error: placement file '{{.*}}placement-bad-types.json': 'world_size' must be an integer

// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-bad-layers.json" 2>&1 | FileCheck %s --check-prefix=LAYERS
// LAYERS: error: placement file '{{.*}}placement-bad-layers.json': 'layers' must be an object mapping layer names to replica lists

// RUN: not flexmoe-opt %s --moe-initial-placement="placement-file=%S/Inputs/placement-bad-device.json" 2>&1 | FileCheck %s --check-prefix=DEVICE
// DEVICE: error: placement file '{{.*}}placement-bad-device.json': expert 2 of layer 'moe1' lists a device id that is not an integer

// Round-robin with too few slots: 4 experts on 2 devices need 2 slots each.
// RUN: not flexmoe-opt %s --moe-initial-placement="world-size=2 slots-per-device=1" 2>&1 | FileCheck %s --check-prefix=RRSLOTS
// RRSLOTS: error: 'moe.layer' op device 0 holds 2 experts of layer 'moe1' but has 1 slots

// RUN: not flexmoe-opt %s --moe-initial-placement="world-size=0" 2>&1 | FileCheck %s --check-prefix=WORLD0
// WORLD0: error: world-size must be in [1, 4096], got 0

// RUN: not flexmoe-opt %s --moe-initial-placement="world-size=5000" 2>&1 | FileCheck %s --check-prefix=WORLDBIG
// WORLDBIG: error: world-size must be in [1, 4096], got 5000

// RUN: not flexmoe-opt %s --moe-initial-placement="slots-per-device=-1" 2>&1 | FileCheck %s --check-prefix=SLOTSNEG
// SLOTSNEG: error: slots-per-device must be >= 0 (0: ceil(experts / world-size)), got -1

// None of the failures leaves partial output behind.
// MISSING-NOT: moe.placement
// NOLAYER-NOT: moe.placement

func.func @two_layers(%x: tensor<2x8x16xf32>, %wg: tensor<16x4xf32>,
                      %w1: tensor<4x16x32xf32>, %b1: tensor<4x32xf32>,
                      %w2: tensor<4x32x16xf32>, %b2: tensor<4x16xf32>)
    -> (tensor<2x8x16xf32>, tensor<f32>, tensor<f32>) {
  %y, %aux = moe.layer %x, %wg, %w1, %b1, %w2, %b2
      {name = "moe1", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  %z, %aux2 = moe.layer %y, %wg, %w1, %b1, %w2, %b2
      {name = "moe2", num_experts = 4 : i64, top_k = 2 : i64, ffn_hidden = 32 : i64,
       capacity_factor = 0.0 : f32, aux_loss_coef = 0.01 : f32}
      : (tensor<2x8x16xf32>, tensor<16x4xf32>, tensor<4x16x32xf32>, tensor<4x32xf32>,
         tensor<4x32x16xf32>, tensor<4x16xf32>) -> (tensor<2x8x16xf32>, tensor<f32>)
  return %z, %aux, %aux2 : tensor<2x8x16xf32>, tensor<f32>, tensor<f32>
}
