#!/usr/bin/env python
"""Runs a command as a local TensorFlow cluster; the same as `tfllm-launch`.

  python scripts/launch_local.py --workers=2 [--ps=1] -- tfllm-train --config=... \
      --config.runtime.strategy=multi_worker
"""

import sys

from tfllm.launch import main

if __name__ == "__main__":
    sys.exit(main())
