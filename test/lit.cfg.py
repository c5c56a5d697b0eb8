# lit configuration for the flexmoe IR and tool tests.
import os

import lit.formats

config.name = "flexmoe"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".mlir", ".test"]
config.excludes = ["unit", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py.in", "Inputs"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.flexmoe_obj_root, "test")

# The project's tools first, then FileCheck, not, count, split-file from LLVM.
config.environment["PATH"] = os.pathsep.join(
    [config.flexmoe_tools_dir, config.llvm_tools_dir, config.environment.get("PATH", os.environ["PATH"])])
# Two lit workers share the cores with the OpenMP threads of the runtime's
# tools: waiting threads must sleep, not spin, or a loaded machine crawls.
config.environment["OMP_WAIT_POLICY"] = "passive"
config.substitutions.append(("%python", config.python_executable))
config.substitutions.append(("%flexmoe_src_root", config.flexmoe_src_root))
config.substitutions.append(("%flexmoe_obj_root", config.flexmoe_obj_root))
