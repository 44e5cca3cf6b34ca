"""kdc: a taxonomy-driven knowledge-to-data compiler.

Stages, one module each, records flowing one way:
taxonomy -> plan -> generate -> gate -> mix -> train (-> eval, report, review).
"""

__version__ = "0.1.0"
