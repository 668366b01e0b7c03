import sys

from rbmflow.cli import main

sys.exit(main())
