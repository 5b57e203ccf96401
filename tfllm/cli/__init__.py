"""absl entry points. Thin: parse flags, call the library, print a summary.

Quiet TensorFlow's C++ start-up chatter before any command imports it; users
can still raise the level by setting TF_CPP_MIN_LOG_LEVEL themselves.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
