import sys

from locbench.cli import main

sys.exit(main())
