import sys

from hydra.cli import main

sys.exit(main())
