// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics

// expected-error @+1 {{expert 2 has no replica}}
#p = #moe.placement<world_size = 4, slots_per_device = 2, replicas = [[0], [1], [], [3]]>

// -----

// expected-error @+1 {{device 5 of expert 2 is out of range [0, 4)}}
#p = #moe.placement<world_size = 4, slots_per_device = 2, replicas = [[0], [1], [5], [3]]>

// -----

// expected-error @+1 {{device -1 of expert 0 is out of range [0, 4)}}
#p = #moe.placement<world_size = 4, slots_per_device = 2, replicas = [[-1], [1], [2], [3]]>

// -----

// expected-error @+1 {{expert 1 lists device 2 twice}}
#p = #moe.placement<world_size = 4, slots_per_device = 2, replicas = [[0], [2, 1, 2], [2], [3]]>

// -----

// expected-error @+1 {{device 1 holds 3 experts but has 2 slots}}
#p = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0, 1], [1], [1]]>

// -----

// expected-error @+1 {{placement has no experts}}
#p = #moe.placement<world_size = 2, slots_per_device = 1, replicas = []>

// -----

// expected-error @+1 {{placement has world_size 0; it must be in [1, 4096]}}
#p = #moe.placement<world_size = 0, slots_per_device = 1, replicas = [[0]]>

// -----

// expected-error @+1 {{placement has slots_per_device 0; it must be in [1, 4096]}}
#p = #moe.placement<world_size = 1, slots_per_device = 0, replicas = [[0]]>

// -----

// The runtime's bounds: every table derived from a placement stays small.
// expected-error @+1 {{placement has world_size 1000000000000; it must be in [1, 4096]}}
#p = #moe.placement<world_size = 1000000000000, slots_per_device = 1, replicas = [[0]]>

// -----

// expected-error @+1 {{placement has slots_per_device 4097; it must be in [1, 4096]}}
#p = #moe.placement<world_size = 1, slots_per_device = 4097, replicas = [[0]]>

// -----

// Syntax: the fields come in the documented order.
// expected-error @+1 {{expected 'world_size'}}
#p = #moe.placement<slots_per_device = 1, world_size = 1, replicas = [[0]]>

// -----

// expected-error @+1 {{expected '['}}
#p = #moe.placement<world_size = 1, slots_per_device = 1, replicas = [0]>

// -----

// expected-error @+1 {{expected '>'}}
#p = #moe.placement<world_size = 1, slots_per_device = 1, replicas = [[0]], extra = 1>

// -----

// An invalid placement written inline on an op is reported at the op.
func.func @inline(%g: tensor<2x8xf32>) -> tensor<2x8xf32> {
  // expected-error @+1 {{device 3 of expert 1 is out of range [0, 2)}}
  %s = moe.replica_grad_sync %g {layer = "moe1", placement = #moe.placement<world_size = 2, slots_per_device = 2, replicas = [[0], [3]]>}
      : (tensor<2x8xf32>) -> tensor<2x8xf32>
  return %s : tensor<2x8xf32>
}
