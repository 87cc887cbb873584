import sys

from autoballoon.cli import main

sys.exit(main())
