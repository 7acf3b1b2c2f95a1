"""Shared paths and helpers of test_plot.py and test_report.py.

fixtures/run_cnn/results.json and fixtures/run_llm/results.json were written by the real tool
(build/release/tiermark replay, commit 184b48120e61), with tiny workloads so that they stay small:
  run_cnn: --workload cnn/resnet50:batch=2,steps=1 --allocator all --latency --repetitions 2 --sample-every 50
  run_llm: --workload llm-serve/llama2-7b:requests=4,dataset=fixed,prompt_len=32,output_len=4,kv=paged
           --workload (the same with kv=exact) --allocator caching.pytorch,caching.bfc,buddy,pool.fixed,caching.vmm
           --latency --repetitions 2 --sample-every 200
  run_cnn/capacity.json: tiermark capacity --workload cnn/resnet50:batch=2,steps=1
           --allocator caching.pytorch,caching.bfc,buddy
run_cnn/tiers.json is written by hand (see its "comment"): the tiermark-tiers/1 shape of
harness/tiers_command.cc, docs/tiers.md when that lands.
"""

import os
import pathlib
import shutil
import subprocess

SOURCE = pathlib.Path(os.environ.get("TIERMARK_SOURCE_DIR", pathlib.Path(__file__).resolve().parents[2]))
SCRIPTS = SOURCE / "scripts"
FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
RUN_CNN = FIXTURES / "run_cnn"
RUN_LLM = FIXTURES / "run_llm"
DEBIAN_PYTHON = "/usr/bin/python3"


def copy_run(source, target):
    """A writable copy of a fixture run (plots are written next to the results)."""
    shutil.copytree(source, target)
    return target


def debian_has(module):
    if not os.path.exists(DEBIAN_PYTHON):
        return False
    return subprocess.run([DEBIAN_PYTHON, "-c", f"import {module}"], capture_output=True).returncode == 0
