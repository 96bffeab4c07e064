"""dataone-cn-sslverify: never ask browsers for a client certificate on a DataONE CN's /cn.

See README.md; the modules are listed in design.md (apacheconf, policy,
locate, apachectl, probe, store, transaction, cli, maint).
"""

__version__ = "0.1.0"
