// RUN: flexmoe-opt %s -split-input-file -verify-diagnostics

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  // expected-error @+1 {{'x': size 60 bytes does not match '!exec.buffer<4x4xf32>' (64 bytes)}}
  %x = exec.buffer activation "x" offset 0 size 60 : !exec.buffer<4x4xf32>
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  // expected-error @+1 {{'x': bytes [64, 128) lie outside the arena of 64 bytes}}
  %x = exec.buffer activation "x" offset 64 size 64 : !exec.buffer<4x4xf32>
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  // expected-error @+1 {{'x': offset 2 must be a non-negative multiple of 4}}
  %x = exec.buffer activation "x" offset 2 size 4 : !exec.buffer<f32>
}

// -----

// expected-error @+1 {{buffer elements must be f32 or i32, not 'f16'}}
func.func private @f(!exec.buffer<4xf16>)

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  // expected-error @+1 {{'tokens': input_tokens buffers must be i32}}
  %t = exec.buffer input_tokens "tokens" offset 0 size 16 : !exec.buffer<4xf32>
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  // expected-error @+1 {{'w': a parameter needs an initializer ('init')}}
  %w = exec.buffer parameter "w" offset 0 size 16 {param = "w"} : !exec.buffer<4xf32>
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  // expected-error @+1 {{'m': optimizer state must belong to a parameter buffer}}
  %m = exec.buffer adam_m "m" of %a : !exec.buffer<4xf32> offset 16 size 16 : !exec.buffer<4xf32>
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  // expected-error @+1 {{'m': optimizer state must name its parameter with 'of'}}
  %m = exec.buffer adam_m "m" offset 16 size 16 : !exec.buffer<4xf32>
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer parameter "a" offset 0 size 16 {param = "w", init = "ones"} : !exec.buffer<4xf32>
  // expected-error @+1 {{parameter name 'w' is used twice}}
  %b = exec.buffer parameter "b" offset 16 size 16 {param = "w", init = "ones"} : !exec.buffer<4xf32>
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer loss "a" offset 0 size 4 : !exec.buffer<f32>
  // expected-error @+1 {{is a second loss buffer; 'a' is the loss}}
  %b = exec.buffer loss "b" offset 16 size 4 : !exec.buffer<f32>
}

// -----

// expected-error @+1 {{compute_dtype must be "f32" or "bf16", not "f16"}}
exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f16", arena_size = 64 : i64} {
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  // expected-error @+1 {{cannot view '!exec.buffer<4xf32>' as '!exec.buffer<5xf32>': element type and element count must agree}}
  %b = exec.view %a "b" : !exec.buffer<4xf32> -> !exec.buffer<5xf32>
}

// -----

exec.program @p attributes {world_size = 2 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  // expected-error @+1 {{layer 'moe1': expert 1 has no replica}}
  exec.moe_layer @moe1 {num_experts = 2 : i64, top_k = 1 : i64, d_model = 8 : i64,
                        ffn_hidden = 16 : i64, capacity = 0 : i64, activation = "gelu",
                        world_size = 2 : i64, slots_per_device = 1 : i64,
                        replicas = [array<i64: 0>, array<i64>]}
}

// -----

exec.program @p attributes {world_size = 2 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  // expected-error @+1 {{layer 'moe1': device 0 holds more than 1 experts}}
  exec.moe_layer @moe1 {num_experts = 2 : i64, top_k = 1 : i64, d_model = 8 : i64,
                        ffn_hidden = 16 : i64, capacity = 0 : i64, activation = "gelu",
                        world_size = 2 : i64, slots_per_device = 1 : i64,
                        replicas = [array<i64: 0>, array<i64: 0>]}
}

// -----

exec.program @p attributes {world_size = 4 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  // expected-error @+1 {{layer 'moe1': placement is for world size 2 but the program runs on 4}}
  exec.moe_layer @moe1 {num_experts = 2 : i64, top_k = 1 : i64, d_model = 8 : i64,
                        ffn_hidden = 16 : i64, capacity = 0 : i64, activation = "gelu",
                        world_size = 2 : i64, slots_per_device = 1 : i64,
                        replicas = [array<i64: 0>, array<i64: 1>]}
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  // expected-error @+1 {{'linear' takes 2 to 3 inputs, not 1}}
  exec.kernel linear ins(%a : !exec.buffer<4xf32>) outs(%a : !exec.buffer<4xf32>)
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  // expected-error @+1 {{'linear_grad' produces 2 outputs, not 1}}
  exec.kernel linear_grad ins(%a, %a, %a : !exec.buffer<4xf32>, !exec.buffer<4xf32>, !exec.buffer<4xf32>) outs(%a : !exec.buffer<4xf32>)
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  // expected-error @+1 {{input 0 must be a buffer of i32}}
  exec.kernel embedding ins(%a, %a : !exec.buffer<4xf32>, !exec.buffer<4xf32>) outs(%a : !exec.buffer<4xf32>)
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  // expected-error @+1 {{'layer_norm' needs attribute 'epsilon'}}
  exec.kernel layer_norm ins(%a, %a, %a : !exec.buffer<4xf32>, !exec.buffer<4xf32>, !exec.buffer<4xf32>) outs(%a : !exec.buffer<4xf32>)
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  // expected-error @+1 {{attribute 'approximate' of 'gelu' must be tanh|none}}
  exec.kernel gelu ins(%a : !exec.buffer<4xf32>) outs(%a : !exec.buffer<4xf32>) {approximate = "erf"}
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  // expected-error @+1 {{'add' has no attribute 'alpha'}}
  exec.kernel add ins(%a, %a : !exec.buffer<4xf32>, !exec.buffer<4xf32>) outs(%a : !exec.buffer<4xf32>) {alpha = 1.0 : f32}
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  // expected-error @+1 {{'all_reduce_mean' is a collective; use exec.collective}}
  exec.kernel all_reduce_mean ins(%a : !exec.buffer<4xf32>) outs(%a : !exec.buffer<4xf32>)
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  %c = exec.buffer activation "c" offset 16 size 16 : !exec.buffer<4xi32>
  // expected-error @+1 {{'dispatch_grad' must name its MoE layer}}
  exec.kernel dispatch_grad ins(%a, %c : !exec.buffer<4xf32>, !exec.buffer<4xi32>) outs(%a : !exec.buffer<4xf32>)
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  %c = exec.buffer activation "c" offset 16 size 16 : !exec.buffer<4xi32>
  // expected-error @+1 {{names MoE layer @moe9, which the program does not declare}}
  exec.kernel dispatch_grad layer @moe9 ins(%a, %c : !exec.buffer<4xf32>, !exec.buffer<4xi32>) outs(%a : !exec.buffer<4xf32>)
}

// -----

exec.program @p attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer activation "a" offset 0 size 16 : !exec.buffer<4xf32>
  %b = exec.buffer activation "b" offset 16 size 8 : !exec.buffer<2xf32>
  // expected-error @+1 {{'replica_grad_sync' outputs must have the types of its inputs}}
  exec.collective replica_grad_sync ins(%a : !exec.buffer<4xf32>) outs(%b : !exec.buffer<2xf32>)
}
