"""Runs a job with a time limit and says how it ended.

  run-job.py <seconds> <command...>

Prints the job's output (stdout and stderr together), then
"job exit code N after T s" or "job timed out after T s", and exits 0, so
a test can tell a job that fails as it should (a given exit code) from one
that hangs. On timeout the whole process group (mpirun and its ranks) is
terminated, then killed.
"""
import os
import signal
import subprocess
import sys
import time

limit = float(sys.argv[1])
start = time.monotonic()
job = subprocess.Popen(sys.argv[2:], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, start_new_session=True)
try:
    output, _ = job.communicate(timeout=limit)
    ending = "job exit code %d after %.1f s" % (job.returncode,
                                                 time.monotonic() - start)
except subprocess.TimeoutExpired:
    os.killpg(job.pid, signal.SIGTERM)
    try:
        output, _ = job.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        output, _ = job.communicate()
    ending = "job timed out after %g s" % limit
sys.stdout.write(output.decode(errors="replace"))
print(ending)
