//===- flexmoe-compile.cpp - the compile driver (placeholder) -------------===//
int main() { return 1; }
