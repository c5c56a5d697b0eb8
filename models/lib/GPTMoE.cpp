//===- GPTMoE.cpp - GPT-MoE model builder (placeholder) --------------------===//
