import os

# Tests run on shared 2-core machines: one torch thread each, no progress bars.
os.environ.setdefault("OMP_NUM_THREADS", "1")
