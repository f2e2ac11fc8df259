"""`c3dhash` with the workers' train loop replaced by tests/faults.py's hold_once_loop (test_failures.py's merged
run). Run as a script: Ray puts a driver script's folder (tests/) on its workers' sys.path, so they import
`faults` by name."""
import sys

import faults
from c3dhash.cluster import driver
from c3dhash.cluster.cli import main

if __name__ == "__main__":
    driver.train_loop_per_worker = faults.hold_once_loop
    sys.exit(main())
