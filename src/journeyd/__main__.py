import sys

from journeyd.cli import main

sys.exit(main())
