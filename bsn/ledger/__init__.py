"""The ledger node program that runs inside each ledger container.

Plain Python standard library only: the node image ships this package together with
``bsn/__init__.py`` and nothing else, and an idle node must stay under ~20 MiB RSS.
Run it with ``python3 -m bsn.ledger``; configuration comes from ``BSN_*`` variables
(see ``config.py`` and ``docs/ledger-node.md``).
"""

__version__ = "0.1.0"
