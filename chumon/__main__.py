import sys

from chumon.cli import main

sys.exit(main())
