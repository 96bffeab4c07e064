"""``python3 -m dataone_cn_sslverify``: the same as the ``dataone-cn-sslverify`` command (`entry.main`)."""

import sys

from .entry import main

sys.exit(main())
