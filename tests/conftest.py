"""Settings shared by every test module."""

import atexit
import os
import shutil
import tempfile

# Checkpoints are signed with a per-user key (qzoo.checkpoint.user_key): the tests, and the qzoo processes they
# start, use one made for this session instead of the user's ~/.config/qzoo/checkpoint.key; its folder goes when
# the session ends.
if "QZOO_CHECKPOINT_KEY" not in os.environ:
    _key_folder = tempfile.mkdtemp(prefix="qzoo-test-key-")
    atexit.register(shutil.rmtree, _key_folder, True)
    os.environ["QZOO_CHECKPOINT_KEY"] = os.path.join(_key_folder, "checkpoint.key")
