// RUN: flexmoe-opt %s -split-input-file -exec-buffer-reuse -verify-diagnostics

// exec-buffer-reuse packs buffers by their declared sizes, so a program whose
// sizes or buffer kinds do not hold is refused before any offset is moved.

exec.program @mis_sized attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 4096 : i64} {
  %a = exec.buffer activation "a" offset 0 size 1024 : !exec.buffer<256xf32>
  // expected-error @+1 {{'b': size 512 bytes does not match '!exec.buffer<256xf32>' (1024 bytes)}}
  %b = exec.buffer activation "b" offset 1024 size 512 : !exec.buffer<256xf32>
  exec.kernel gelu ins(%a : !exec.buffer<256xf32>) outs(%b : !exec.buffer<256xf32>)
}

// -----

// Two losses would both have to live to the end of the step.
exec.program @two_losses attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  %a = exec.buffer loss "a" offset 0 size 4 : !exec.buffer<f32>
  // expected-error @+1 {{is a second loss buffer; 'a' is the loss}}
  %b = exec.buffer loss "b" offset 16 size 4 : !exec.buffer<f32>
}

// -----

// A persistent buffer outside the arena: the input was not produced by
// lower-to-exec.
exec.program @outside attributes {world_size = 1 : i64, compute_dtype = "f32", arena_size = 64 : i64} {
  // expected-error @+1 {{'w': bytes [64, 80) lie outside the arena of 64 bytes}}
  %w = exec.buffer parameter "w" offset 64 size 16 {param = "w", init = "ones"} : !exec.buffer<4xf32>
}
