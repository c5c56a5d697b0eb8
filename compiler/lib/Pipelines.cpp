//===- Pipelines.cpp - named pass pipelines -------------------------------===//
#include "flexmoe/Compiler/Pipelines.h"

void flexmoe::registerPipelines() {}
