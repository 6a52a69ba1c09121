"""repocket's tests.

``REPOCKET_TEST_FORMAT=plain`` runs the suite with every model that names no
format stored in the plain format (``make test`` runs both); a test of one
format's bytes marks itself ``envelope_only`` or ``plain_only``. It is set
here, so that processes the tests spawn declare their models the same way.
"""

import os

from repocket import options

FORMAT = os.environ.get("REPOCKET_TEST_FORMAT", "envelope")
options.DEFAULT_FORMAT = FORMAT
