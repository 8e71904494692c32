"""Settings shared by every test module."""

import os
import tempfile

# Checkpoints are signed with a per-user key (qzoo.checkpoint.user_key): the tests, and the qzoo processes they
# start, use one made for this session instead of the user's ~/.config/qzoo/checkpoint.key.
os.environ.setdefault("QZOO_CHECKPOINT_KEY", os.path.join(tempfile.mkdtemp(prefix="qzoo-test-key-"), "checkpoint.key"))
