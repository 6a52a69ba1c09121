"""repocket's tests.

``REPOCKET_TEST_FORMAT=plain`` runs the suite with every model that names no
format stored in the plain format (``make test`` runs both); a test of one
format's bytes marks itself ``envelope_only`` or ``plain_only``.
``REPOCKET_TEST_PARTITIONS=N`` spreads them over N partitions. It is set
here, so that processes the tests spawn declare their models the same way.
"""

import os

from repocket import options

FORMAT = os.environ.get("REPOCKET_TEST_FORMAT", "envelope")
options.DEFAULT_FORMAT = FORMAT
#: ``REPOCKET_TEST_PARTITIONS=4`` spreads every model that names no partition count (and has no
#: unique field) over that many partitions, on the standalone server too; a test of the exact
#: standalone keys or of round-trip counts marks itself ``one_partition``.
PARTITIONS = int(os.environ.get("REPOCKET_TEST_PARTITIONS", "0")) or None
options.DEFAULT_PARTITIONS = PARTITIONS
