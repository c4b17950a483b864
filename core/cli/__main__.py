import sys

from pcapwire.cli import main

sys.exit(main())
