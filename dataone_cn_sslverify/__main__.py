"""``python3 -m dataone_cn_sslverify``: the same as the ``dataone-cn-sslverify`` command."""

import sys

from .cli import main

sys.exit(main())
